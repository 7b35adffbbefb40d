"""What a new user sees: `mdl-tf` prints its own progress and result; library logging goes to the log file."""
import json
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from mdl_tf import console
from tests.conftest import REPO

# The library lines a first `make run` showed (issue 19); none may reach the terminal.
NOISE_ON_TERMINAL = [re.compile(p) for p in (
    r"Unable to register cu(FFT|DNN|BLAS) factory", r"^E\d{4} ", r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EWI] ",
    r"FutureWarning", r"Tables initialized inside a tf\.function", r"property_predicate is not supported",
    r"does not have payload_format", r"could not transform", r"^(I|W)\d{4} ", r"^INFO", r"^WARNING",
    r"^Traceback", r"push the model without validation",
)]
# Every stdout line of `mdl-tf run` is one of these, or part of the JSON result that ends the output.
OWN_STDOUT = [re.compile(p) for p in (
    r"^\[[123]/3\] ", r"^\[ *\d+\.\ds\] \w+ done \(\d+\.\d s\)$", r"^ {10}Trainer epoch \d+/\d+: loss ",
    r"^ {10}Trainer kept epoch \d+/\d+ \(the best mean eval AUC, [01]\.\d{4}\); it is exported$",
    r"^ {6}the new model was not blessed",
)]


def test_run_prints_only_its_own_lines_and_logs_the_rest(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it: TF's C++ would print its import-time lines
    res = subprocess.run([sys.executable, "-m", "mdl_tf.cli", "run", "--out", str(out), "--rows", "3000",
                          "--epochs", "2", "--auc-floor", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    log = out / "mdl-tf-run.log"
    assert res.stderr.splitlines()[-1] == f"mdl-tf: log: {log} (-v shows it live)"  # once, at the end
    for line in res.stderr.splitlines()[:-1]:  # genuine warnings only, one attributed line each
        assert line.startswith("mdl-tf: warning: ") or line.startswith("mdl-tf: error: "), line
        assert not any(p.search(line) for p in NOISE_ON_TERMINAL), line
    lines = res.stdout.splitlines()
    start = lines.index("{")
    result = json.loads("\n".join(lines[start:]))  # the result: the pushed model answers over gRPC as in process
    assert result["pipeline"]["pushed"] and len(result["grpc_predictions"]) == 4 and result["grpc_matches_in_process"]
    for line in lines[:start]:
        assert any(p.search(line) for p in OWN_STDOUT), line
    assert sum(" done (" in ln for ln in lines) >= 8 and any("Trainer epoch 2/2" in ln for ln in lines)
    assert sum("Trainer kept epoch " in ln for ln in lines) == 1  # which epoch's weights the pushed model holds
    # What the terminal did not show is in the log file: TFX's INFO, the benign warnings, TF's C++ lines.
    text = log.read_text()
    assert "Component Transform is finished" in text
    assert "property_predicate is not supported" in text


def _record(message, level=logging.WARNING, name="tfx.orchestration"):
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_known_noise_goes_to_the_file_and_genuine_warnings_are_one_attributed_line(tmp_path, capsys):
    log = tmp_path / "x" / "mdl-tf-test.log"
    before = list(logging.getLogger().handlers)
    with console.session(log, verbose=False, title="mdl-tf test"):
        logging.getLogger("tfx.orchestration").warning("ArtifactQuery.property_predicate is not supported.")
        logging.getLogger("tensorflow").warning("Tables initialized inside a tf.function  will be re-initialized")
        logging.getLogger("absl").info("Component Trainer is running.")
        logging.getLogger("absl").warning("Pusher is going to push the model without validation. Consider using "
                                          "Evaluator or InfraValidator in your pipeline.")
        logging.getLogger("absl").warning("`101` is not a valid tf.function parameter name. Sanitizing to `arg_101`.")
        logging.getLogger("tfx.components").warning("Split 'eval' has\nno examples")
        warnings.warn("an old thing", FutureWarning)
        warnings.warn_explicit("support ends", FutureWarning, "/x/google/api_core/_python_version_support.py", 246)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "mdl-tf: warning: tfx.components: Split 'eval' has no examples"
    assert re.fullmatch(r"mdl-tf: warning: FutureWarning \(.*test_console\.py:\d+\): an old thing", err[1])
    assert err[2] == f"mdl-tf: log: {log} (-v shows it live)"  # once, when the block ends
    assert len(err) == 3, err
    text = log.read_text()
    for needle in ("==== mdl-tf test", "property_predicate", "Tables initialized", "Component Trainer is running",
                   "support ends", "an old thing", "without validation", "Sanitizing to `arg_101`"):
        assert needle in text, needle
    assert logging.getLogger().handlers == before  # the set-up is restored


def test_verbose_shows_everything_live(tmp_path, capsys):
    with console.session(tmp_path / "v.log", verbose=True):
        logging.getLogger("tfx.orchestration").warning("ArtifactQuery.property_predicate is not supported.")
        logging.getLogger("absl").info("Component Trainer is running.")
        logging.getLogger("absl").warning("Pusher is going to push the model without validation. Consider using "
                                          "Evaluator or InfraValidator in your pipeline.")
    err = capsys.readouterr().err
    assert "property_predicate" in err and "Component Trainer is running" in err and "-v shows" not in err
    assert "without validation" in err  # known noise too: verbose hides nothing


def test_each_command_logs_under_its_output_folder(tmp_path):
    from mdl_tf.cli import build_parser, log_file

    parse = build_parser().parse_args
    assert log_file(parse(["run", "--out", str(tmp_path)])) == tmp_path / "mdl-tf-run.log"
    assert log_file(parse(["pipeline", "run", "--data", "d", "--root", str(tmp_path)])) == \
        tmp_path / "mdl-tf-pipeline-run.log"
    assert log_file(parse(["predict", "--server", "s", "--model-name", "m", "--input", "i",
                           "--output", str(tmp_path / "o.jsonl")])) == tmp_path / "mdl-tf-predict.log"
    assert log_file(parse(["schema", "export"])) == console.default_log_dir() / "mdl-tf-schema-export.log"


@pytest.mark.parametrize("verbose", [False, True])
def test_a_user_error_is_still_one_line(tmp_path, capsys, verbose):
    from mdl_tf.cli import main

    argv = (["-v"] if verbose else []) + ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "mdl-tf: error: " in err and "features.yaml" in err
    assert ("Traceback" in err) == verbose
    assert not (tmp_path / "o").exists()  # nothing left behind in a folder the failed command created
    (tmp_path / "p").mkdir()  # an existing output folder keeps the log, with the traceback in it
    argv[argv.index(str(tmp_path / "o"))] = str(tmp_path / "p")
    assert main(argv) == 2
    assert "Traceback" in (tmp_path / "p" / "mdl-tf-train.log").read_text()


def test_building_the_parser_does_not_load_tensorflow():
    """The console takes over TensorFlow's C++ start-up output only once the command runs: a parser that imports
    TensorFlow (e.g. for a default value) prints `Unable to register cuDNN factory` lines on the terminal."""
    code = "import sys, mdl_tf.cli as c; c.build_parser(); print('tensorflow' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False", "building the CLI parser imported TensorFlow"


def test_importing_the_client_shows_no_python_version_future_warning():
    """A user's script that imports the serving client saw google-api-core's FutureWarning about Python 3.10, which
    our pinned platform requires; the package silences exactly that warning."""
    code = ("import warnings; warnings.simplefilter('default'); import mdl_tf.serving.client; "
            "import google.api_core")
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "FutureWarning" not in res.stderr, res.stderr[-2000:]
