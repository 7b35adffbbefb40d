"""`mdl-tf scenario add` and `mdl-tf task add`: onboard a new scenario or task into a trained MDL model
(`mdl_tf.training.onboarding`)."""
from __future__ import annotations

import json


def _onboard_config(args):
    from mdl_tf.training.onboarding_settings import OnboardConfig

    return OnboardConfig(epochs=args.epochs, batch_size=args.batch_size, dense_lr=args.dense_lr,
                         sparse_lr=args.sparse_lr, seed=args.seed)


def _report(report: dict, out) -> None:
    shown = {k: report[k] for k in ("kind", "name", "bit_identical_rows", "fallback", "initial", "onboarded")
             if k in report}
    shown["train"] = {k: report["train"][k] for k in ("rows", "epochs", "seconds", "trainable_params")}
    print(json.dumps(shown, indent=2))
    print(f"wrote {out} (existing outputs bit-identical on {report['bit_identical_rows']} rows)")


def cmd_scenario_add(args) -> None:
    from mdl_tf.training.onboarding import add_scenario

    _report(add_scenario(args.model_dir, args.name, args.data, args.out, _onboard_config(args)), args.out)


def cmd_task_add(args) -> None:
    from mdl_tf.training.onboarding import add_task

    _report(add_task(args.model_dir, args.name, args.label, args.data, args.out, _onboard_config(args),
                     init_from=args.init_from), args.out)


def add_onboarding_parsers(sub) -> None:
    from mdl_tf.cli import positive_float, positive_int
    from mdl_tf.training.onboarding_settings import MIN_SCENARIO_ROWS, MIN_TASK_ROWS, OnboardConfig

    defaults = OnboardConfig()

    def common(p):
        p.add_argument("--model-dir", required=True, help="an `mdl-tf train` output folder (or an earlier "
                       "onboarding's --out)")
        p.add_argument("--name", required=True)
        p.add_argument("--data", required=True, help="dataset folder in the model's schema: train/*.csv "
                       "(eval/*.csv optional, for the report)")
        p.add_argument("--out", required=True, help="a new folder for the onboarded model (same layout as --model-dir)")
        p.add_argument("--epochs", type=positive_int, default=defaults.epochs)
        p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
        p.add_argument("--dense-lr", type=positive_float, default=defaults.dense_lr,
                       help="RMSprop learning rate of the new token's weights")
        p.add_argument("--sparse-lr", type=positive_float, default=defaults.sparse_lr,
                       help="Adagrad learning rate of its ê_spec row")
        p.add_argument("--seed", type=int, default=0)

    scen = sub.add_parser("scenario", help="onboard a new scenario into a trained MDL model (only its token "
                          "trains; existing scenarios stay bit-identical)"
                          ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = scen.add_parser("add", help=f"append a scenario token, train it on the scenario's rows (at least "
                        f"{MIN_SCENARIO_ROWS}), export a new model folder")
    common(p)
    p.set_defaults(func=cmd_scenario_add)
    task = sub.add_parser("task", help="onboard a new task into a trained MDL model (only its token and head "
                          "train; existing tasks stay bit-identical)"
                          ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = task.add_parser("add", help=f"append a task token and head, train them on a 0/1 label column (at least "
                        f"{MIN_TASK_ROWS} labelled rows), export a new model folder")
    common(p)
    p.add_argument("--label", required=True, help="the new task's 0/1 label column in --data (empty = unknown)")
    p.add_argument("--init-from", help="existing task whose token and head the new one starts from (default: the "
                   "first task)")
    p.set_defaults(func=cmd_task_add)
