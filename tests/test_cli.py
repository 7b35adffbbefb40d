import subprocess
import sys

from mdl_tf.cli import build_parser
from mdl_tf.constants import MODEL_NAMES
from mdl_tf.models import REGISTRY


def test_cli_model_names_match_the_registry():
    assert sorted(MODEL_NAMES) == sorted(REGISTRY)


def test_help_lists_every_subcommand_with_a_description():
    res = subprocess.run([sys.executable, "-m", "mdl_tf.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for cmd in ("data", "schema", "train", "run", "pipeline", "bench"):
        line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith(cmd + " "))
        assert len(line.split(None, 1)[1]) > 10


def test_unknown_hparam_syntax_is_an_error(capsys):
    from mdl_tf.cli import main

    assert main(["train", "--data", "x", "--out", "y", "--hparam", "oops"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_parser_knows_the_data_commands():
    args = build_parser().parse_args(["data", "synth", "--out", "o", "--rows", "2000"])
    assert args.rows == 2000 and args.dataset == "synth"


def test_train_flags_reach_the_train_config():
    from mdl_tf.cli import _train_config

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--dense-lr", "0.002",
                                      "--weight-decay", "0.5", "--warmup-steps", "200"])
    tc = _train_config(args)
    assert (tc.dense_lr, tc.weight_decay, tc.warmup_steps) == (0.002, 0.5, 200)
    assert tc.compile_args()["warmup_steps"] == 200
    plain = _train_config(build_parser().parse_args(["train", "--data", "d", "--out", "o"]))
    assert plain.warmup_steps == 0 and plain.compile_args()["warmup_steps"] == 0  # off by default
