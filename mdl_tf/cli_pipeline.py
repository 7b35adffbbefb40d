"""`mdl-tf pipeline run|compile`: the TFX production path from the command line (see tfx_pipeline/)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time

PROGRESS = re.compile(r"^Component (\S+) is (running|finished)\.$")


class _ComponentProgress(logging.Handler):
    """Prints one line on stdout when each TFX component finishes, with the time since the run started and the
    component's own time (absl INFO, thousands of lines, goes to the command's log file)."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.started = time.time()
        self.running = {}

    def emit(self, record):
        m = PROGRESS.match(record.getMessage())
        if not m:
            return
        name, state = m.groups()
        now = time.time()
        if state == "running":
            self.running[name] = now
        else:
            took = now - self.running.pop(name, now)
            print(f"[{now - self.started:7.1f}s] {name} done ({took:.1f} s)", flush=True)


def print_component_progress() -> None:
    """Component progress lines on stdout; where the rest of TFX's logging goes is `mdl_tf.console`'s job."""
    logging.getLogger("absl").addHandler(_ComponentProgress())


def pipeline_train_dict(args) -> dict:
    from mdl_tf.cli import _train_config

    tc = dataclasses.asdict(_train_config(args))
    for key in ("model", "verbose", "max_steps_per_epoch", "export", "save_test_predictions"):
        tc.pop(key)
    return tc


def check_onboarding_args(args) -> None:
    """--add-scenario appends a token to the blessed MDL model: it cannot also warm-start or train another model."""
    from mdl_tf.cli import CLIError

    if args.add_scenario is None:
        return
    if args.warm_start:
        raise CLIError("--add-scenario and --warm-start: pick one (onboarding keeps the blessed model's weights "
                       "frozen and trains only the new scenario's token)")
    if args.model != "mdl":
        raise CLIError(f"--add-scenario with --model {args.model}: only MDL has scenario tokens to onboard")


def cmd_pipeline_run(args) -> dict:
    from mdl_tf.cli import _hparams, _print, naming_hparam_flags
    from tfx_pipeline import local_runner

    check_onboarding_args(args)
    print_component_progress()
    hparams = _hparams(args)
    # Onboarding rebuilds the blessed model from its recorded hyperparameters and ignores these flags: an error in that
    # rebuild is not theirs to be named for.
    with contextlib.nullcontext() if args.add_scenario else naming_hparam_flags(args, hparams):
        summary = _run(local_runner, args, hparams)
    for reason in summary.get("not_blessed_because", []):
        print(f"      not blessed: {reason}")
    _print(summary)
    return summary


def _run(local_runner, args, hparams: dict) -> dict:
    return local_runner.run(
        args.data, args.schema or args.data, args.root, model=args.model, serving_root=args.serving_root,
        model_name=args.model_name, hparams=hparams, train=pipeline_train_dict(args),
        train_steps=args.train_steps, eval_steps=args.eval_steps, workers=args.workers,
        beam_args_file=args.beam_args, fail_on_anomalies=args.fail_on_anomalies, auc_floor=args.auc_floor,
        max_auc_drop=args.max_auc_drop, input_format=args.input_format, enable_cache=not args.no_cache,
        pipeline_name=args.name, warm_start=args.warm_start, add_scenario=args.add_scenario)


def cmd_pipeline_compile(args) -> None:
    from mdl_tf.cli import _hparams, naming_hparam_flags
    from tfx_pipeline.kubeflow_v2_runner import compile_pipeline
    from tfx_pipeline.local_runner import load_profile

    check_onboarding_args(args)
    extra = load_profile(args.beam_args) if args.beam_args else None  # the cluster's runner, never the local flags
    hparams = _hparams(args)
    with naming_hparam_flags(args, hparams):
        spec = compile_pipeline(image=args.image, out=args.out, data_root=args.data, schema_dir=args.schema,
                                schema_uri=args.schema_uri, pipeline_root=args.root, serving_root=args.serving_root,
                                model=args.model, model_name=args.model_name, hparams=hparams,
                                train=pipeline_train_dict(args), train_steps=args.train_steps,
                                beam_pipeline_args=extra, fail_on_anomalies=args.fail_on_anomalies,
                                pipeline_name=args.name, warm_start=args.warm_start,
                                add_scenario=args.add_scenario)
    tasks = sorted(spec["pipelineSpec"]["root"]["dag"]["tasks"])
    print(f"wrote {args.out}: pipeline '{spec['pipelineSpec']['pipelineInfo']['name']}', {len(tasks)} tasks: "
          f"{', '.join(tasks)}")


def add_pipeline_parser(sub, add_train_args) -> None:
    from mdl_tf.cli import positive_int

    from tfx_pipeline.pipeline import configs

    pipe = sub.add_parser("pipeline", help="the TFX pipeline: run locally or compile for Kubeflow"
                          ).add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p):
        add_train_args(p)
        p.add_argument("--model-name", default=configs.MODEL_NAME, help="TF Serving model name")
        p.add_argument("--train-steps", type=positive_int, default=configs.TRAIN_STEPS,
                       help=f"training steps in all, whatever the number of rows (default {configs.TRAIN_STEPS}), "
                            f"split into --epochs rounds that each end with an eval pass; the best is exported")
        p.add_argument("--beam-args", metavar="YAML", help="file of Beam pipeline arguments (runner profile)")
        p.add_argument("--fail-on-anomalies", action="store_true",
                       help="stop before training when ExampleValidator finds anomalies")
        p.add_argument("--name", default=configs.PIPELINE_NAME, help="pipeline name (letters, digits, hyphens)")
        p.add_argument("--warm-start", action="store_true",
                       help="continue training from the latest blessed model (weights, optimizer slots, embedding "
                            "rows carried over by id); without one yet, train from scratch")
        p.add_argument("--add-scenario", metavar="NAME",
                       help="onboard scenario NAME into the latest blessed MDL model: train only its new token on "
                            "NAME's rows (--epochs, --batch-size, --dense-lr, --sparse-lr apply), every existing "
                            "output bit-identical; no Transform runs")

    p = pipe.add_parser("run", help="run the pipeline in-process (LocalDagRunner, Beam DirectRunner)")
    p.add_argument("--data", required=True, help="folder with train/*.csv and eval/*.csv (or *.tfrecord*)")
    p.add_argument("--schema", help="folder with features.yaml + schema.pbtxt (default: the data folder's)")
    p.add_argument("--root", required=True, help="pipeline root: artifacts, ML Metadata, cache")
    p.add_argument("--serving-root", help="where pushed models go (default: <root>/serving)")
    p.add_argument("--eval-steps", type=positive_int,
                   help="eval batches per validation (default: the whole eval split)")
    p.add_argument("--workers", type=positive_int, default=1, help="Beam DirectRunner processes (1 = in-memory)")
    p.add_argument("--auc-floor", type=float, default=configs.AUC_FLOOR,
                   help=f"per task, overall slice: the AUC a model needs to be blessed (default {configs.AUC_FLOOR})")
    p.add_argument("--max-auc-drop", type=float, default=configs.MAX_AUC_DROP,
                   help=f"per task, overall slice: allowed AUC drop against the last blessed model (default "
                        f"{configs.MAX_AUC_DROP})")
    p.add_argument("--input-format", choices=("csv", "tfrecord"), default="csv")
    common(p)
    p.add_argument("--no-cache", action="store_true", help="re-run every component")
    p.set_defaults(func=cmd_pipeline_run)

    p = pipe.add_parser("compile", help="write Kubeflow Pipelines v2 / Vertex AI JSON (nothing runs)")
    p.add_argument("--target", choices=("kubeflow-v2",), default="kubeflow-v2")
    p.add_argument("--image", required=True, help="container image with mdl-tf installed (see Dockerfile)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--schema", required=True, help="local schema folder (its features.yaml is embedded)")
    p.add_argument("--schema-uri", help="schema.pbtxt as the cluster sees it (default /app/schemas/<name>/)")
    p.add_argument("--data", required=True, help="data root as the cluster sees it (gs://...)")
    p.add_argument("--root", required=True, help="pipeline root as the cluster sees it")
    p.add_argument("--serving-root", required=True, help="TF Serving model base as the cluster sees it")
    common(p)
    p.set_defaults(func=cmd_pipeline_compile)

