"""mdl-tf: MDL, the Multi-Distribution Learner (arXiv 2602.07520), in TensorFlow/Keras 2 and TFX.

Importing this package guarantees Keras 2: it sets `TF_USE_LEGACY_KERAS=1` when TensorFlow is not loaded yet, and
raises `LegacyKerasError` with the fix when `tf.keras` is already bound to Keras 3.
"""
import warnings

from mdl_tf._keras_guard import LegacyKerasError, ensure_legacy_keras

ensure_legacy_keras()
# google-api-core (under the serving client and TFX) warns at import that its Python 3.10 support ends; TFX 1.16, the
# newest that installs on our platform, needs 3.10, so no user of this package can act on it. Only that FutureWarning
# of that package is silenced.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")

__version__ = "0.1.0"
__all__ = ["LegacyKerasError", "__version__"]
