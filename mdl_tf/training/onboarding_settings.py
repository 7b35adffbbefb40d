"""Onboarding's settings and limits, importable without TensorFlow (the CLI builds its parser from them before the
console has taken over TensorFlow's start-up output)."""
from __future__ import annotations

import dataclasses

# A new scenario needs this many training rows: its token has ~(2k + 1)·L·d² + k·d·(d_in + d) weights (k = 4), and
# below a few hundred rows an epoch is a handful of steps, too few to move it usefully from the global token's copy.
MIN_SCENARIO_ROWS = 200
# A new task needs this many labelled training rows, with both classes present.
MIN_TASK_ROWS = 200


@dataclasses.dataclass
class OnboardConfig:
    """Training of an onboarded token: epochs, batch size, learning rates (RMSprop on its dense slices, Adagrad on
    its ê_spec row) and the seed."""
    epochs: int = 2
    batch_size: int = 256
    dense_lr: float = 1e-3
    sparse_lr: float = 0.05
    seed: int = 0

    def __post_init__(self):  # a bad rate stops the onboarding before the base model and the data are loaded
        from mdl_tf.training.settings import check_model_sizes, check_optimizer_settings

        check_optimizer_settings(dense_lr=self.dense_lr, sparse_lr=self.sparse_lr)
        check_model_sizes(epochs=self.epochs, batch_size=self.batch_size)
