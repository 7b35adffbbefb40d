"""Test set-up: Keras 2 before TensorFlow loads, quiet logs, shared small datasets."""
import json
import os
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import mdl_tf  # noqa: E402,F401

# Fail fast: a suite running on Keras 3 would test the wrong library.
assert tf.keras.Model.__module__.startswith("tf_keras"), "tests must run with tf.keras = Keras 2 (tf_keras)"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `make test` runs the suite on two xdist workers (`-n 2 --dist loadgroup`): each group runs whole on one worker, so
# a module- or session-scoped fixture is built once. A group is a test module, except that every module using one of
# the expensive session fixtures below (directly or through another fixture) joins that fixture's group, so a
# pipeline run or a trained model is never built twice. Tests marked `serial` (real multi-process clusters, whose
# async results move with CPU contention) run after, alone; the Makefile collects only SERIAL_MODULE for that part (so
# it does not import every module just to deselect it), and collection fails if a test elsewhere is marked serial.
# {fixture: its group}: `pipeline_day1` is the first run of `pipeline_runs`, so both are one group.
EXPENSIVE_SESSION_FIXTURES = {"pipeline_runs": "pipeline_runs", "pipeline_day1": "pipeline_runs",
                              "synth_model": "synth_model"}
SERIAL_MODULE = "test_distributed"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    def module_of(item):
        module = getattr(item, "module", None)
        return module.__name__.rsplit(".", 1)[-1] if module else item.nodeid.split("::")[0]

    stray = [item.nodeid for item in items if item.get_closest_marker("serial") and module_of(item) != SERIAL_MODULE]
    if stray:
        raise pytest.UsageError(f"{', '.join(stray)}: marked serial outside tests/{SERIAL_MODULE}.py, so `make test` "
                                f"would never run it; put it there or update SERIAL_MODULE and the Makefile")
    group = {}
    for item in items:
        used = [g for f, g in EXPENSIVE_SESSION_FIXTURES.items() if f in getattr(item, "fixturenames", ())]
        module = module_of(item)
        if used and module not in group:
            group[module] = used[0]
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            module = module_of(item)
            item.add_marker(pytest.mark.xdist_group(group.get(module, module)))


# Longest group first. xdist hands out groups by test count, so a group of a few slow tests (a whole pipeline, a bench
# smoke) could start last and leave the other worker idle at the end. The controller orders the groups by their
# recorded wall time (tests/durations.json: seconds per group, written by a run with MDL_RECORD_TEST_DURATIONS=1, and
# merged so a partial run only updates its own groups); a group with no record counts its tests at the recorded mean
# per test, or 10 s each.
DURATIONS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "durations.json")
_DURATIONS_SEEN: dict = {}


def _recorded_durations() -> dict:
    try:
        with open(DURATIONS_FILE) as f:
            return json.load(f)["groups"]
    except (OSError, ValueError, KeyError):
        return {}


def _group_of(nodeid: str) -> str:
    return nodeid.rsplit("@", 1)[1] if "@" in nodeid else nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist (`-p no:xdist`) it is simply not called
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadGroupScheduling

    if config.getvalue("dist") != "loadgroup":
        return None

    class LongestFirstScheduling(LoadGroupScheduling):
        def _assign_work_unit(self, node):
            if not getattr(self, "_ordered", False):  # once, before the first group is handed out
                self._ordered = True
                recorded = _recorded_durations()
                per_test = recorded.get("_per_test", 10.0)
                order = sorted(self.workqueue.items(),
                               key=lambda unit: -recorded.get(unit[0], per_test * len(unit[1])))
                self.workqueue.clear()
                self.workqueue.update(order)
            super()._assign_work_unit(node)

    return LongestFirstScheduling(config, log)


def pytest_runtest_logreport(report):
    if not hasattr(report, "node"):  # only on the controller: reports that came from a worker carry their node
        return
    _DURATIONS_SEEN.setdefault(_group_of(report.nodeid), {}).setdefault(report.nodeid, 0.0)
    _DURATIONS_SEEN[_group_of(report.nodeid)][report.nodeid] += report.duration


def pytest_sessionfinish(session):
    if not os.environ.get("MDL_RECORD_TEST_DURATIONS") or not _DURATIONS_SEEN:
        return
    groups = {**_recorded_durations(),
              **{g: round(sum(tests.values()), 1) for g, tests in _DURATIONS_SEEN.items()}}
    groups.pop("_per_test", None)
    tests = sum(len(t) for t in _DURATIONS_SEEN.values())
    groups["_per_test"] = round(sum(sum(t.values()) for t in _DURATIONS_SEEN.values()) / tests, 1)
    with open(DURATIONS_FILE + ".tmp", "w") as f:
        json.dump({"note": "seconds per xdist group, for tests/conftest.py's longest-first order",
                   "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]))}, f, indent=1)
    os.replace(DURATIONS_FILE + ".tmp", DURATIONS_FILE)


SHARED = os.path.join(os.path.dirname(REPO), "shared")
ALICCP_SRC = os.path.join(SHARED, "data", "aliccp_sample")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset on disk (6,000 rows)."""
    from mdl_tf.data import synthetic

    out = tmp_path_factory.mktemp("synth")
    synthetic.write(out, rows=6000, seed=1)
    return out


def without_test_split(data_dir):
    """Remove a dataset's test split: `train()` then evaluates the eval split only (a learning test that reads only
    eval metrics skips a second evaluation pass). Returns `data_dir`."""
    import shutil

    shutil.rmtree(os.path.join(data_dir, "test"))
    return data_dir


@pytest.fixture(scope="session")
def synth_cfg():
    from mdl_tf.data import synthetic

    return synthetic.feature_config()


@pytest.fixture(scope="session")
def synth_batch(synth_dir, synth_cfg):
    """(transform, vocab sizes, one transformed batch of 64 training rows, its frame)."""
    from mdl_tf.data.io import read_split
    from mdl_tf.data.transform import FeatureTransform, fit_stats, raw_columns, vocab_sizes

    frame = read_split(synth_dir, "train", synth_cfg)
    stats = fit_stats(frame, synth_cfg)
    transform = FeatureTransform(synth_cfg, stats)
    rows = frame.iloc[:64]
    batch = transform({k: tf.constant(v) for k, v in raw_columns(rows, synth_cfg).items()})
    return transform, vocab_sizes(synth_cfg, stats), batch, rows


@pytest.fixture(scope="session")
def synth_model(synth_dir, tmp_path_factory):
    """A small MDL trained by `mdl-tf train` on `synth_dir` (1 epoch, d=16, one block: what its readers test, the
    serving paths, does not depend on the depth, and a block fewer is a quarter less tracing in every graph built
    from it); its folder holds saved_model/. Tests that serve it copy saved_model/ into their own TF Serving layout."""
    from mdl_tf.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("synth_model")
    train(synth_dir, synth_dir, out, TrainConfig(epochs=1, batch_size=256, verbose=0),
          {"d_model": 16, "num_layers": 1})
    return out


# Property-based tests: a fixed seed and a small example count in CI; `make fuzz` (MDL_FUZZ=1) runs many more.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", settings.get_profile("ci"), derandomize=False)
settings.load_profile("fuzz" if os.environ.get("MDL_FUZZ") == "1" else "ci")
FUZZ_SCALE = int(os.environ.get("MDL_FUZZ_SCALE", "25")) if os.environ.get("MDL_FUZZ") == "1" else 1


def fuzz_examples(n: int) -> int:
    """The example count of a property test: `n` in CI, `n * MDL_FUZZ_SCALE` under `make fuzz`."""
    return n * FUZZ_SCALE


SYNTH_SCHEMA = os.path.join(REPO, "schemas", "synthetic")
# One block (any model's num_layers): the pipeline tests check wiring, artifacts and numbers that do not depend on the
# depth, and every graph the Trainer, the Evaluator and the serving tests build is a quarter smaller.
PIPELINE_ARGS = ["--d-model", "16", "--layers", "1", "--epochs", "1", "--batch-size", "128", "--auc-floor", "0.5",
                 "--max-auc-drop", "0.2"]


def run_pipeline(data, root, *extra):
    """`mdl-tf pipeline run` on the synthetic schema with a tiny model; returns the exit code."""
    from mdl_tf.cli import main

    return main(["pipeline", "run", "--data", str(data), "--schema", SYNTH_SCHEMA, "--root", str(root),
                 *PIPELINE_ARGS, *extra])


@pytest.fixture(scope="session")
def pipeline_day1(tmp_path_factory):
    """Day 1 of the warm-start world (3,000 synthetic rows) through `pipeline run --warm-start`: no blessed model yet,
    so MDL trains from scratch and is pushed. It is both the first run of `pipeline_runs` and the first day of
    test_warm_start's three-day pipeline, which continues in a copy of the root as it stood after this run (`day1`);
    the copy's ML Metadata still points at the day-1 artifacts in `root`, which later runs there never modify.
    Returns (data dir, pipeline root, copy of the root after day 1, what the run printed)."""
    import contextlib
    import io
    import shutil

    from mdl_tf.data import synthetic

    base = tmp_path_factory.mktemp("pipeline")
    data, root = base / "data", base / "root"
    synthetic.write(data, rows=3000, seed=5, start_day=1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_pipeline(data, root, "--train-steps", "60", "--warm-start")
    print(printed.getvalue(), end="")
    assert code == 0
    shutil.copytree(root, base / "day1")
    return data, root, base / "day1", printed.getvalue()


@pytest.fixture(scope="session")
def pipeline_runs(pipeline_day1):
    """Two pipeline runs on the same 3,000 synthetic rows: MDL (`pipeline_day1`), then the MMoE baseline trained under
    MirroredStrategy, so the Trainer re-runs (and exports from a strategy) and the Evaluator compares MMoE with the
    blessed MDL model. Returns (data dir, pipeline root, first pushed versions)."""
    from tfx_pipeline import artifacts

    data, root, _, _ = pipeline_day1
    first = [p.name for p in artifacts.pushed_versions(root / "serving", "mdl")]
    assert run_pipeline(data, root, "--train-steps", "90", "--model", "mmoe", "--strategy", "mirrored") == 0
    return data, root, first
