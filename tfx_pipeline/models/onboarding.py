"""The TFX Trainer's onboarding mode (`mdl-tf pipeline run --add-scenario NAME`): one scenario token appended to the
latest blessed MDL model and trained on the new scenario's rows; every output of a row whose membership does not
include NAME stays bit-identical (a row of an old scenario that also lists NAME now fuses NAME's token too).

Why this mode reads raw examples and not the Transform's output: an old scenario's outputs stay bit-identical only
if its rows are transformed exactly as the blessed model transforms them, and a Transform run on today's data
recomputes vocabularies and numeric statistics. So the Trainer applies the blessed model's own Transform graph (its
URI is recorded in the model's metadata as `transform_graph`) and only the scenario inputs are recomputed for the
feature config with the new scenario appended (`scenario_inputs` compares values with the config's list; no
analyzer). The exported SavedModel carries that same Transform graph, so serving stays one artefact.

custom_config["onboard"]: {"scenario": NAME, **OnboardConfig fields} (epochs, batch_size, dense_lr, sparse_lr, seed;
`tfx_pipeline.pipeline.configs.onboard_settings`).
The token's training and the bit-identity check are `mdl_tf.training.onboarding`'s, shared with `mdl-tf scenario
add`; a failed check raises and leaves no model to evaluate or push. The run also writes a warm-start state in which
NAME is a regular scenario row (`save_folded_state`), so the next day's `--warm-start` run continues from the
onboarded model.
"""
from __future__ import annotations

import mdl_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from mdl_tf import config as cfgmod
from mdl_tf.data.transform import SCENARIO_MASK, dense_column, raw_dtypes, scenario_inputs
from mdl_tf.errors import UserError
from mdl_tf.evaluation import task_metrics
from mdl_tf.export import METADATA_FILE, export_saved_model, read_metadata
from mdl_tf.models.onboarded import fold
from mdl_tf.training import onboarding as onb
from mdl_tf.training import warm_start as ws
from mdl_tf.utils import join, write_json
from tfx_pipeline.models.model import (TRAINER_METRICS, say, serving_raw_spec, state_dir_of, vocabularies_from,
                                       warmup_examples)
from tfx_pipeline.models.preprocessing import LABEL_MASK, LABELS, label_outputs
from tfx_pipeline.pipeline.configs import WARMUP_REQUESTS

READ_BATCH = 1024  # raw examples parsed and transformed per step while the new scenario's rows are gathered


class PipelineOnboardingError(UserError):
    """A pipeline onboarding that cannot run (no blessed model, not an MDL model, a name already taken, too few
    rows); the Trainer fails with this one-line message and nothing is exported."""


class OnboardedTransform(tf.Module):
    """The blessed model's TF Transform layer with `scenario_mask` [B, N_s + 1] and `scenario_index` [B] recomputed
    for `cfg` (its feature config plus the new scenario, last). Every other output is the base layer's, so an old
    scenario's row is transformed exactly as before; a row of the new scenario gets its own mask column and index
    N_s instead of the unseen-scenario fallback (all-zero mask).

    Input: raw features as `tf.io.parse_example` gives them for the Transform's raw spec; output: the transformed
    features the model reads."""

    def __init__(self, base_layer, cfg: cfgmod.FeatureConfig):
        super().__init__(name="onboarded_transform")
        self.base = base_layer
        self._cfg = cfg
        sc = cfg.scenario
        self._columns = [c for c in (sc.column, sc.membership_column) if c]

    def __call__(self, raw: dict) -> dict:
        out = dict(self.base(raw))
        dtypes = raw_dtypes(self._cfg)
        out.update(scenario_inputs(self._cfg, {c: dense_column(raw[c], dtypes[c], "") for c in self._columns}))
        return out


def _base_metadata(base_model: str | None) -> dict:
    if not base_model:
        raise PipelineOnboardingError("--add-scenario: this pipeline root has no blessed model yet; run the pipeline "
                                      "without --add-scenario first (onboarding appends a token to a trained model)")
    try:
        meta = read_metadata(base_model)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise PipelineOnboardingError(f"{base_model}: cannot read the blessed model's metadata ({e})") from None
    if meta is None:
        raise PipelineOnboardingError(f"{base_model}: the blessed model has no {METADATA_FILE}; it was not exported "
                                      f"by mdl-tf (onboarding needs an mdl-tf MDL model)")
    if meta.get("model") != "mdl":
        raise PipelineOnboardingError(f"--add-scenario: the latest blessed model ({base_model}) is a "
                                      f"{meta.get('model')!r} model; only MDL has scenario tokens to onboard")
    if not meta.get("transform_graph"):
        raise PipelineOnboardingError(f"--add-scenario: the latest blessed model ({base_model}) does not record its "
                                      f"Transform graph (trained before pipeline onboarding existed); run the "
                                      f"pipeline once without --add-scenario, then onboard")
    if not tf.io.gfile.exists(meta["transform_graph"]):
        raise PipelineOnboardingError(f"--add-scenario: the Transform graph of the latest blessed model "
                                      f"({meta['transform_graph']}) is gone (pipeline root moved or cleaned); run the "
                                      f"pipeline once without --add-scenario, then onboard")
    return meta


def _load_base(base_model: str, meta: dict, precision: str):
    """The blessed model rebuilt with its weights; a model onboarding cannot extend is a one-line error."""
    try:
        return onb.load_saved(base_model, meta, precision)
    except ValueError as e:  # check_onboardable (another token structure) or a checkpoint that does not fit
        raise PipelineOnboardingError(f"--add-scenario: the latest blessed model ({base_model}) cannot be onboarded: "
                                      f"{e}") from None


def _parsed_batches(patterns: list, spec: dict) -> tf.data.Dataset:
    """Serialized tf.Examples of ExampleGen's gzipped TFRecord files (in file order) and their parsed features."""
    files = tf.data.Dataset.list_files(patterns, shuffle=False)
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(READ_BATCH)
    return ds.map(lambda s: (s, tf.io.parse_example(s, spec)))


def gather(patterns: list, spec: dict, transform: OnboardedTransform, cfg: cfgmod.FeatureConfig) -> dict:
    """One pass over a split: {"features": {name: [n, ...]}, "targets": {labels, label_mask}, "examples": [n]} of
    the new scenario's rows (membership of the config's last scenario), and "old_examples" [<= CHECK_ROWS]: rows
    outside it, at most CHECK_ROWS / 8 per batch of READ_BATCH (every old output must stay bit-identical on them)."""
    features, targets, examples, old = [], [], [], []
    for serialized, raw in _parsed_batches(patterns, spec):
        # The Transform graph also maps the label columns when they are present; they never reach the model.
        x = {k: v for k, v in transform(raw).items() if k not in (LABELS, LABEL_MASK)}
        new = x[SCENARIO_MASK][:, -1] > 0
        if tf.reduce_any(new):
            features.append({k: tf.boolean_mask(v, new).numpy() for k, v in x.items()})
            targets.append({k: tf.boolean_mask(v, new).numpy() for k, v in label_outputs(raw, cfg).items()})
            examples.append(tf.boolean_mask(serialized, new).numpy())
        if sum(len(e) for e in old) < onb.CHECK_ROWS:  # spread over >= 8 batches, not the file's first rows
            old.append(tf.boolean_mask(serialized, tf.logical_not(new)).numpy()[:onb.CHECK_ROWS // 8])

    def stack(parts, empty):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else empty

    return {"features": stack(features, {}), "targets": stack(targets, {}),
            "examples": np.concatenate(examples) if examples else np.array([], object),
            "old_examples": np.concatenate(old)[:onb.CHECK_ROWS] if old else np.array([], object)}


def _metrics(examples, labels: np.ndarray, label_mask: np.ndarray, saved_model_dir, cfg) -> dict:
    probs = onb.serve_examples(saved_model_dir, examples)
    return {t: task_metrics(labels[label_mask[:, i] > 0, i], probs[t][label_mask[:, i] > 0])
            for i, t in enumerate(cfg.task_names)}


def run_onboarding(fn_args, custom: dict) -> dict:
    """Onboard custom["onboard"]["scenario"] into `fn_args.base_model` (see the module docstring); exports to
    `fn_args.serving_model_dir`, writes the report to `<model_run_dir>/metrics.json` and returns it.
    Raises PipelineOnboardingError on a request that cannot run (before any training), RuntimeError if an old
    output changed (the export is removed, so nothing is evaluated or pushed)."""
    settings = dict(custom["onboard"])
    name = settings.pop("scenario")
    meta = _base_metadata(fn_args.base_model)
    base_cfg = cfgmod.from_dict(meta["feature_config"], f"{fn_args.base_model}/assets.extra/{METADATA_FILE}")
    sc = base_cfg.scenario
    if name in sc.values:
        raise PipelineOnboardingError(f"--add-scenario {name}: the blessed model already has a scenario {name!r} "
                                      f"(it has {list(sc.values)}); pick a new name")
    cfg = onb.with_scenario(base_cfg, name)
    oc = onb.OnboardConfig(**settings)
    precision = meta.get("precision", "float32")
    base = _load_base(fn_args.base_model, meta, precision)
    tft_output = tft.TFTransformOutput(meta["transform_graph"])
    transform = OnboardedTransform(tft_output.transform_features_layer(), cfg)
    raw_spec = serving_raw_spec(tft_output, cfg)
    spec = tft_output.raw_feature_spec()
    parse_spec = {**raw_spec, **{c: spec[c] for c in cfg.label_columns if c in spec}}
    train = gather(fn_args.train_files, parse_spec, transform, cfg)
    evaluation = gather(fn_args.eval_files, parse_spec, transform, cfg)
    rows = len(train["examples"])
    if rows < onb.MIN_SCENARIO_ROWS:
        raise PipelineOnboardingError(
            f"train split ({', '.join(fn_args.train_files)}): {rows} rows of scenario {name!r} (column "
            f"'{sc.column}'{', ' + repr(sc.membership_column) if sc.membership_column else ''}); onboarding needs at "
            f"least {onb.MIN_SCENARIO_ROWS}: add rows of the new scenario")
    old = np.concatenate([evaluation["old_examples"], train["old_examples"]])[:onb.CHECK_ROWS]
    if not len(old):
        raise PipelineOnboardingError("--add-scenario: the data has no rows outside the new scenario to check the "
                                      "old outputs on; keep some rows of the existing scenarios in the eval split")
    say(f"onboarding scenario {name!r} into {fn_args.base_model}: {rows:,} training rows")

    tf.keras.utils.set_random_seed(oc.seed)
    step = {"kind": "scenario", "name": name, "init_from": "global"}
    model = onb.make_onboarded(cfg, onb._base_of(base), [*onb._steps_of(base), step], precision)
    onb._copy_appended(base, model)
    ds = tf.data.Dataset.from_tensor_slices((train["features"], train["targets"])).shuffle(
        rows, seed=oc.seed).batch(oc.batch_size)
    report = {"kind": "scenario", "name": name, "base_model": fn_args.base_model,
              "train": onb.train_last_token(model, ds, rows, cfg.num_tasks, oc, list(range(cfg.num_tasks)))}
    say(f"scenario token trained: {report['train']['epochs']} epochs, {report['train']['seconds']:.1f} s, "
        f"loss {report['train']['loss']}")

    out = fn_args.serving_model_dir
    keep = ("feature_config", "tasks", "scenarios", "outputs", "onboarding")
    export_saved_model(model, transform, cfg, out, raw_spec=raw_spec,
                       warmup=warmup_examples(tft_output, base_cfg, WARMUP_REQUESTS),
                       metadata={**{k: v for k, v in meta.items() if k not in keep},
                                 "onboarding": onb.onboarding_history(meta, base_cfg, step)})
    try:
        report["bit_identical_rows"] = onb.check_bit_identical(fn_args.base_model, out, old)
        if len(evaluation["examples"]):
            args = (evaluation["examples"], evaluation["targets"][LABELS], evaluation["targets"][LABEL_MASK])
            report["eval_rows"] = int(len(evaluation["examples"]))
            report["fallback"] = _metrics(*args, fn_args.base_model, base_cfg)
            report["onboarded"] = _metrics(*args, out, cfg)
        report["warm_start_state"] = save_folded_state(model, cfg, tft_output, meta, out, evaluation["features"],
                                                       precision)
    except BaseException:
        if tf.io.gfile.exists(out):  # a model that changed old outputs is never evaluated or pushed
            tf.io.gfile.rmtree(out)
        raise
    finally:
        onb._LOADED.clear()
    say(f"old scenarios bit-identical on {report['bit_identical_rows']} rows"
        + (f"; new scenario eval AUC {_aucs(report['fallback'])} (global-token fallback) -> "
           f"{_aucs(report['onboarded'])} (onboarded)" if "onboarded" in report else ""))
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    write_json(join(fn_args.model_run_dir, TRAINER_METRICS), {"model": "mdl", "onboarding": report})
    return report


def save_folded_state(model, cfg: cfgmod.FeatureConfig, tft_output, meta: dict, serving_model_dir: str,
                      features: dict, precision: str) -> dict:
    """Write the warm-start state of the onboarded `model` next to its export (`state_dir_of`), for the next
    warm-started run: the model folded into a regular MDLModel (`mdl_tf.models.onboarded.fold`) whose scenarios are
    the base's then NAME, with the base Transform graph's vocabularies and the weights only (the onboarding trained
    one token with its own optimizer, so there are no slots for the rest). The next run's features.yaml must list
    NAME last (`warm_start` checks). Returns {"dir", "max_abs_logit_change"}: how far the folded model's logits are
    from the onboarded model's on up to 512 of NAME's eval rows (float rounding; `fold` keeps them equal, also with
    global_input="mean_spec")."""
    folded = fold(model, precision)
    state = state_dir_of(serving_model_dir)
    ws.save_state(state, folded, cfg, vocabularies_from(tft_output, cfg),
                  {"model": "mdl", "hparams": meta["hparams"]}, with_slots=False)
    change = None
    if features:
        sample = {k: v[:512] for k, v in features.items()}
        change = float(np.max(np.abs(folded.compute_logits(sample).numpy() - model.compute_logits(sample).numpy())))
    say(f"warm-start state: {cfg.scenario.values[-1]!r} folded into a regular scenario row"
        + (f" (largest logit change on its eval rows {change:.2g})" if change is not None else ""))
    return {"dir": state, "max_abs_logit_change": change}


def _aucs(metrics: dict) -> str:
    return ", ".join(f"{t} {m['auc']:.4f}" for t, m in metrics.items() if m.get("auc") is not None)
