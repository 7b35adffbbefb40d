"""Names that the CLI needs without importing TensorFlow (`mdl-tf --help` stays fast)."""

# Every name registered in `mdl_tf.models.REGISTRY` (a test keeps the two in step).
MODEL_NAMES = ("mdl", "rankmixer", "shared_bottom", "mmoe", "ple", "star", "hmoe", "pepnet", "dffm")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
