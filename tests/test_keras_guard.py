import os
import subprocess
import sys

import pytest


def _run(code: str, env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if env_value is not None:
        env["TF_USE_LEGACY_KERAS"] = env_value
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_importing_after_keras3_is_bound_names_the_fix():
    res = _run("import tensorflow as tf; tf.keras.Model; import mdl_tf", None)
    assert res.returncode != 0
    assert "LegacyKerasError" in res.stderr and "TF_USE_LEGACY_KERAS=1" in res.stderr


def test_explicitly_disabled_legacy_keras_is_rejected():
    res = _run("import mdl_tf", "0")
    assert res.returncode != 0 and "TF_USE_LEGACY_KERAS='0'" in res.stderr


@pytest.mark.slow
def test_import_first_binds_keras2_even_without_the_variable():
    res = _run("import mdl_tf, os, tensorflow as tf; print(tf.keras.Model.__module__, os.environ['TF_USE_LEGACY_KERAS'])",
               None)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["tf_keras.src.engine.training", "1"]
