"""What a benchmark ran on, recorded next to every result."""
from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    import tensorflow as tf

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__}
