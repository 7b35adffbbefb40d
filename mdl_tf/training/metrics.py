"""Keras metrics of training (the epoch lines, early stopping and the Trainer's model selection read them)."""
from __future__ import annotations

import tensorflow as tf


class DefinedAUC(tf.keras.metrics.AUC):
    """Keras' bucketed ROC AUC, NaN where the AUC is undefined: rows of one class only (no positive or no negative
    among the weighted rows seen).

    Keras returns 0.0 there (its rates divide 0 by 0 "safely"), which read as a terrible model in the epoch lines and
    pulled the mean eval AUC that picks the exported epoch down. Counts come from the lowest threshold, where every
    row is predicted positive: positives = TP + FN, negatives = FP + TN.

    Shapes as `tf.keras.metrics.AUC`: `update_state(y_true [B], y_pred [B], sample_weight [B])`; `result()` a scalar.
    """

    def result(self):
        auc = super().result()
        positives = self.true_positives[0] + self.false_negatives[0]
        negatives = self.false_positives[0] + self.true_negatives[0]
        return tf.where((positives > 0) & (negatives > 0), auc, tf.constant(float("nan"), auc.dtype))
