"""Guarantees that `tf.keras` is Keras 2 (`tf_keras`) before any mdl_tf code touches it.

TFX 1.16, TF Transform 1.16, TFMA 0.47 and TF Recommenders only work with Keras 2. TensorFlow 2.16 binds `tf.keras`
lazily, on first access, to Keras 3 unless `TF_USE_LEGACY_KERAS=1` is set and `tf_keras` is installed. Once bound,
the choice cannot be undone inside the process, so this module sets the variable if it is still possible and fails
loudly, with the fix, when it is not.
"""
import os
import sys

ENV_VAR = "TF_USE_LEGACY_KERAS"

_FIX = (
    "mdl_tf needs Keras 2: set TF_USE_LEGACY_KERAS=1 in the environment before Python starts "
    "(e.g. `export TF_USE_LEGACY_KERAS=1`), and write `tf.keras`, never `import keras`."
)


class LegacyKerasError(ImportError):
    """Raised when `tf.keras` is (or would be) Keras 3."""


def ensure_legacy_keras() -> None:
    value = os.environ.get(ENV_VAR)
    if value not in (None, "1", "true", "True"):
        raise LegacyKerasError(f"{ENV_VAR}={value!r} is set. {_FIX}")
    # Setting it here still helps when TensorFlow is not imported yet, and it is inherited by subprocesses and
    # Beam workers started from this process.
    os.environ[ENV_VAR] = "1"
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf  # already imported; this is a lookup

    module = tf.keras.Model.__module__
    if not module.startswith("tf_keras"):
        raise LegacyKerasError(
            f"tf.keras is already bound to Keras 3 ({module}) in this process, so mdl_tf cannot run. {_FIX}"
        )


def keras_version() -> str:
    import tf_keras

    return tf_keras.__version__
