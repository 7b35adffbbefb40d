import re
import subprocess
import sys

import pytest

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


def test_train_config_refuses_settings_compile_would_refuse():
    """One rule (`check_optimizer_settings`), applied when the configuration is built: a negative learning rate would
    otherwise climb the loss without an error, and a bad warm-up would fail only after the data was read."""
    import pytest

    from mdl_tf.errors import InvalidSetting, UserError
    from mdl_tf.training.settings import check_optimizer_settings
    from mdl_tf.training.trainer import TrainConfig

    for bad, message in (({"dense_lr": -1e-3}, "dense_lr must be > 0, got -0.001"),
                         ({"sparse_lr": 0}, "sparse_lr must be > 0, got 0"),
                         ({"sparse_accumulator": float("nan")}, "sparse_accumulator must be a finite number, got nan"),
                         ({"oov_rate": 1.0}, r"oov_rate must be in \[0, 1\), got 1.0"),
                         ({"weight_decay": -1}, "weight_decay must be >= 0, got -1"),
                         ({"warmup_steps": True}, "warmup_steps must be a whole number of steps, got True")):
        with pytest.raises(InvalidSetting, match=message) as caught:
            TrainConfig(**bad)
        assert caught.value.setting == next(iter(bad)) and isinstance(caught.value, UserError)
    assert TrainConfig(dense_lr=2e-3, warmup_steps=10, oov_rate=0.1).compile_args()["dense_lr"] == 2e-3
    import pickle

    import numpy as np

    assert TrainConfig(dense_lr=np.float32(1e-3), sparse_lr=np.array(0.05), warmup_steps=np.int64(3)).warmup_steps == 3
    for huge in (10 ** 400, "0.001"):  # an int beyond the float range, text: refused by the rule, never a traceback
        with pytest.raises(InvalidSetting, match="dense_lr must be a finite number"):
            TrainConfig(dense_lr=huge)
    schedule = lambda step: 1e-3  # noqa: E731  (what a Keras LearningRateSchedule is to the rule: a callable)
    with pytest.raises(InvalidSetting, match="dense_lr must be a finite number"):  # a configuration stays JSON
        TrainConfig(dense_lr=schedule)
    check_optimizer_settings(dense_lr=schedule, allow_schedules=True)  # compile takes it ...
    with pytest.raises(InvalidSetting, match="build the warm-up into the schedule"):  # ... but not with a warm-up
        check_optimizer_settings(dense_lr=schedule, warmup_steps=10, allow_schedules=True)
    for bad, message in (({"epochs": 0}, "epochs must be a whole number >= 1, got 0"),
                         ({"batch_size": 2 ** 40}, "batch_size must be at most 2147483647")):
        with pytest.raises(InvalidSetting, match=message):
            TrainConfig(**bad)
    error = pickle.loads(pickle.dumps(InvalidSetting("dense_lr", "dense_lr must be > 0, got 0")))
    assert (error.setting, str(error)) == ("dense_lr", "dense_lr must be > 0, got 0")


def test_onboarding_settings_are_checked_by_the_same_rule_without_tensorflow():
    code = ("import sys\nfrom mdl_tf.training.onboarding_settings import OnboardConfig\n"
            "try:\n    OnboardConfig(sparse_lr=-0.05)\nexcept ValueError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines() == ["sparse_lr must be > 0, got -0.05", "False"], res.stderr[-2000:]


def test_oov_rate_flag_is_a_rate(capsys):
    from mdl_tf.cli import main

    assert main(["train", "--data", "d", "--out", "o", "--oov-rate", "1"]) == 2
    assert "--oov-rate: 1 must be in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("parse, good, bad, rule", [
    ("rate", ["0", "0.999"], ["1", "-0.1", "nan", "inf"], "must be in [0, 1)"),
    ("positive_float", ["1e-9", "3"], ["0", "-1", "nan", "inf"], "must be a positive number"),
    ("non_negative_float", ["0", "2.5"], ["-1e-9", "nan", "inf"], "must be a finite number >= 0"),
])
def test_bounded_number_flags_keep_their_bounds_and_wording(parse, good, bad, rule):
    import argparse

    from mdl_tf import cli

    parse = getattr(cli, parse)
    assert [parse(v) for v in good] == [float(v) for v in good]
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"{text} {rule}")):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match="'x' is not a number"):
        parse("x")


def test_comma_list_strips_and_drops_blanks_and_repeats_in_order():
    from mdl_tf.cli import comma_list

    assert comma_list(" a, b,,a ,") == ["a", "b"] and comma_list(None) == [] and comma_list(" , ") == []


@pytest.mark.parametrize("argv, message", [
    (["bench", "pipeline", "--rows", "1500,x"], "--rows '1500,x': expected comma-separated integers >= 1, e.g. 10000,"),
    (["bench", "pipeline", "--rows", "1500", "--ids", " , "], "--ids: no id encoding given; available: vocabulary, "
                                                              "hashed"),
    (["bench", "onboarding", "--rows-list", "250,0"], "--rows-list '250,0': expected comma-separated integers >= 1"),
    (["bench", "movielens1m", "--protocols", "random,daily"], "--protocols: unknown protocol(s) ['daily']; available: "
                                                              "random, temporal"),
    (["bench", "movielens1m", "--models", "mdl,gpt"], "--models: unknown model(s) ['gpt']; available: "),
    (["bench", "movielens1m", "--probe", "dropout=0.1", "--probe-seeds", "0,one"],
     "--probe-seeds '0,one': expected comma-separated integers >= 0, e.g. 0,1,2"),
    (["bench", "quality", "--models", ","], "--models: no model given; available: "),
])
def test_comma_separated_flags_are_read_and_refused_alike(argv, message, tmp_path, capsys):
    from mdl_tf.cli import main

    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"mdl-tf: error: {message}"), err
    assert not (tmp_path / "o").exists() or [p.name for p in (tmp_path / "o").iterdir()] in ([], [
        f"mdl-tf-{argv[0]}-{argv[1]}.log"])  # refused before any work
