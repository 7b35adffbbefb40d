"""Run the pipeline in-process with LocalDagRunner (SQLite ML Metadata in the pipeline root, Beam DirectRunner).

`mdl-tf pipeline run --data DIR --schema schemas/<name> --model NAME --root OUT` calls `run()`.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import yaml

from mdl_tf import config as cfgmod
from mdl_tf.schema import SCHEMA_FILE, check_schema_file, schema_dir_of
from mdl_tf.utils import atomic_write_text
from tfx_pipeline import artifacts, preflight
from tfx_pipeline.pipeline import configs
from tfx_pipeline.pipeline.pipeline import create_pipeline

log = logging.getLogger(__name__)


def schema_source(schema_dir) -> Path:
    """`<schema_dir>/schema.pbtxt`; ConfigError when there is none."""
    src = Path(schema_dir) / SCHEMA_FILE
    if not src.exists():
        raise cfgmod.ConfigError(f"{src}: schema not found; a schema directory holds features.yaml and "
                                 f"{SCHEMA_FILE} (`mdl-tf schema export --schema {schema_dir}` writes it from the "
                                 f"features.yaml there)")
    return src


def versioned_schema(schema_dir, pipeline_root) -> Path:
    """Copy schema.pbtxt to <root>/schemas/<content sha>/ so an edited schema is a new ImportSchemaGen input.

    ImportSchemaGen's cache key holds only the file path (TFX_NOTES §7); a content-addressed path makes an edit in
    place a cache miss while an unchanged schema still resumes from the cache."""
    text = schema_source(schema_dir).read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    dst = Path(pipeline_root) / "schemas" / digest / SCHEMA_FILE
    if not dst.exists():
        atomic_write_text(dst, text)
    return dst


def load_profile(args_file) -> list:
    """A Beam profile file as flags: a YAML list of `--flag=value` strings or a mapping (`runner: FlinkRunner`)."""
    loaded = yaml.safe_load(Path(args_file).read_text()) or []
    if isinstance(loaded, dict):
        loaded = [f"--{k}={v}" for k, v in loaded.items()]
    if not isinstance(loaded, list) or not all(isinstance(a, str) and a.startswith("--") for a in loaded):
        raise cfgmod.ConfigError(f"{args_file}: Beam arguments must be a list of '--flag=value' strings or a "
                                 f"mapping of flag -> value")
    return loaded


def quiet_dill_trace() -> None:
    """Make Beam's pickler stop clearing every logger's level cache after each pickle (idempotent).

    apache_beam's dill_pickler calls dill's `_trace(False)` after every dumps/loads, which is `Logger.setLevel`, and
    setLevel clears the cache of every logger in the process (TF, TFX, Beam and TFMA register about 1,000): 13,913
    calls and 5-12 s of a 3,000-row pipeline run. Setting the level only when it changes has the same effect."""
    try:
        from dill import _dill
    except ImportError:  # a Beam without dill: nothing to do
        return
    logger = getattr(_dill, "log", None)  # a dill that names it otherwise has another _trace: leave it alone
    if logger is None or getattr(_dill._trace, "quiet", False):
        return

    def _trace(boolean):
        level = logging.INFO if boolean else logging.WARN
        if logger.level != level:
            logger.setLevel(level)

    _trace.quiet = True
    _dill._trace = _trace


def beam_args(workers: int = 1, args_file=None) -> list:
    """DirectRunner arguments (in-memory, or multi-processing with `workers` > 1) plus a profile file's flags; a
    profile that picks its own runner (or DirectRunner mode) replaces the local DirectRunner flags."""
    # One worker is Beam's default (the in-memory DirectRunner), so it takes no flag: TFX builds an sdist of its whole
    # installation for every Beam component that is given any Beam argument (make_beam_dependency_flags; ~5 s for
    # each of 4 components per run), which only a remote runner installs.
    out = ([] if workers <= 1 else
           ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
    if not args_file:
        return out
    loaded = load_profile(args_file)
    if any(a.startswith("--direct_") or (a.startswith("--runner=") and a != "--runner=DirectRunner") for a in loaded):
        out = []
    return out + loaded


PROFILES = Path(__file__).parent / "beam_profiles"  # direct_multiprocess, flink, spark, dataflow (.yaml)


def run(data, schema, root, model: str = "mdl", serving_root=None, model_name: str = configs.MODEL_NAME,
        hparams: dict = None, train: dict = None, train_steps: int = configs.TRAIN_STEPS, eval_steps=None,
        workers: int = 1, beam_args_file=None, fail_on_anomalies: bool = False, auc_floor: float = configs.AUC_FLOOR,
        max_auc_drop: float = configs.MAX_AUC_DROP, input_format: str = "csv", enable_cache: bool = True,
        pipeline_name: str = configs.PIPELINE_NAME, warm_start: bool = False, add_scenario: str | None = None) -> dict:
    """Validate the input, run the pipeline, and summarise what it produced.

    warm_start: the Trainer continues from the latest blessed model of this pipeline root (see create_pipeline);
    add_scenario: onboard that scenario into the latest blessed MDL model instead of training (create_pipeline)."""
    from tfx import v1 as tfx

    from tfx_pipeline.models.model import check_trainer_settings

    check_trainer_settings(model, hparams, train)  # the model's name too
    schema = schema_dir_of(schema)
    cfg = cfgmod.load(schema)
    if add_scenario is not None and cfg.scenario.dtype == "int" and not cfgmod.is_plain_int(add_scenario):
        raise cfgmod.ConfigError(f"--add-scenario {add_scenario}: the scenario column holds integers (scenario dtype: "
                                 f"int); name the new scenario by its integer written plainly, e.g. 7 (not 07 or +7)")
    root = Path(root).resolve()
    serving_root = Path(serving_root).resolve() if serving_root else root / "serving"
    check_schema_file(cfg, schema_source(schema))  # before the data: an edited features.yaml needs a new schema
    rows = preflight.check_input(data, cfg, input_format)
    root.mkdir(parents=True, exist_ok=True)
    schema_file = versioned_schema(schema, root)
    pipeline = create_pipeline(
        pipeline_name=pipeline_name, pipeline_root=str(root / "pipeline"), data_root=str(Path(data).resolve()),
        schema_file=str(schema_file), feature_config=cfg, serving_root=str(serving_root), model=model,
        hparams=hparams, train=train, model_name=model_name, train_steps=train_steps, eval_steps=eval_steps,
        auc_floor=auc_floor, max_auc_drop=max_auc_drop, fail_on_anomalies=fail_on_anomalies,
        input_format=input_format, metadata_connection_config=artifacts.connection_config(root),
        beam_pipeline_args=beam_args(workers, beam_args_file), enable_cache=enable_cache, warm_start=warm_start,
        add_scenario=add_scenario)
    before = {p.name for p in artifacts.pushed_versions(serving_root, model_name)}
    earlier = artifacts.latest_evaluation(root) if artifacts.metadata_path(root).exists() else None
    quiet_dill_trace()
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    out = summary(root, serving_root, model_name, before, rows, time.time() - started)
    # Only this run's Evaluator explains this run (one stopped before it leaves an earlier run's output the latest).
    if out["evaluation"] and not out["blessed"] and out["evaluation"] != (earlier or {}).get("uri"):
        out["not_blessed_because"] = not_blessed_because(out["evaluation"], auc_floor, max_auc_drop)
    return out


def not_blessed_because(eval_uri, auc_floor: float, max_auc_drop: float) -> list:
    """One sentence per threshold the candidate failed, naming the task, its AUC and the flag that set the bound."""
    from mdl_tf.export import OUTPUT_SUFFIX

    try:
        failures = artifacts.validation_failures(eval_uri)
    except Exception as e:  # noqa: BLE001  (the run is over: a reason that cannot be read is not a failure of it)
        return [f"the Evaluator's validation result could not be read ({type(e).__name__}: {e}); see {eval_uri}"]
    reasons = []
    for f in failures:
        if "missing" in f:
            reasons.append(f"thresholds or slices of the eval config had no metrics to check (see {eval_uri})")
            continue
        task = f["output"][:-len(OUTPUT_SUFFIX)] if f["output"].endswith(OUTPUT_SUFFIX) else f["output"]
        where = "" if f["slice"] == "Overall" else f" on slice {f['slice']}"
        if f["diff"]:
            reasons.append(f"{task}: {f['metric']} changed by {f['value']:+.4f} against the blessed model{where}, "
                           f"more than --max-auc-drop {max_auc_drop} allows")
        else:
            one_class = " (0 is what the Evaluator reports when the eval rows hold one class)" if f["value"] == 0 else ""
            reasons.append(f"{task}: {f['metric']} {f['value']:.4f}{where} is below --auc-floor {auc_floor}{one_class}")
    return reasons


def summary(root: Path, serving_root: Path, model_name: str, before: set, rows: dict, seconds: float) -> dict:
    blessing = artifacts.latest_blessing(root)
    evaluation = artifacts.latest_evaluation(root)
    count = artifacts.latest(root, "Integer")  # AnomaliesGate's outputs (the only Integer/String artifacts)
    report = artifacts.latest(root, "String")
    pushed = [str(p) for p in artifacts.pushed_versions(serving_root, model_name) if p.name not in before]
    return {"pipeline_root": str(root), "rows": rows, "seconds": round(seconds, 1),
            "blessed": bool(blessing and blessing["properties"].get("blessed") == 1),
            "evaluation": evaluation["uri"] if evaluation else None,
            "anomalies": None if count is None else int(_read_value(count["uri"]) or 0),
            "anomaly_report": (_read_value(report["uri"]) or None) if report else None,
            "pushed": pushed[-1] if pushed else None,
            "serving_model_base": str(serving_root / model_name)}


def _read_value(uri: str) -> str:
    """The text of a value artifact (its uri is the `value` file itself)."""
    path = Path(uri)
    return path.read_text() if path.is_file() else ""

