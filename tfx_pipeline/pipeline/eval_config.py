"""The TFMA EvalConfig, derived from the feature config: one MetricsSpec per task head, overall + per-scenario
slices (+ the config's slice_columns), and the blessing thresholds.

Blessing (TFX_NOTES §5-6): per task, on the overall slice only (per_slice_thresholds; a plain MetricConfig.threshold
would gate every scenario slice), an absolute AUC floor and, when a blessed baseline exists, a bounded AUC drop.
"""
from __future__ import annotations

import tensorflow_model_analysis as tfma

from mdl_tf.config import FeatureConfig
from mdl_tf.export import output_name
from tfx_pipeline.pipeline import configs

# Declared explicitly: a tf.saved_model.save model is evaluated as `tf_generic`, so compiled Keras metrics are ignored.
HEAD_METRICS = ("ExampleCount", "AUCPrecisionRecall", "BinaryCrossentropy", "Calibration", "MeanLabel",
                "MeanPrediction", "CalibrationPlot")
AUC = "AUC"


def slicing_specs(cfg: FeatureConfig) -> list:
    columns = [cfg.scenario.column, *[c for c in cfg.slice_columns if c != cfg.scenario.column]]
    return [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[c]) for c in columns]


def head_spec(task: str, auc_floor: float, max_auc_drop: float) -> tfma.MetricsSpec:
    gate = tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()],
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": auc_floor}),
            change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                         absolute={"value": -max_auc_drop})))
    metrics = [tfma.MetricConfig(class_name=c) for c in HEAD_METRICS]
    metrics.append(tfma.MetricConfig(class_name=AUC, per_slice_thresholds=[gate]))
    return tfma.MetricsSpec(output_names=[output_name(task)], metrics=metrics)


def eval_config(cfg: FeatureConfig, auc_floor: float = configs.AUC_FLOOR,
                max_auc_drop: float = configs.MAX_AUC_DROP) -> tfma.EvalConfig:
    if not 0.0 <= auc_floor <= 1.0:
        raise ValueError(f"auc_floor must be in [0, 1], got {auc_floor}")
    if max_auc_drop < 0:
        raise ValueError(f"max_auc_drop must be >= 0, got {max_auc_drop}")
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default",
                                    label_keys={output_name(t.name): t.label for t in cfg.tasks})],
        slicing_specs=slicing_specs(cfg),
        metrics_specs=[head_spec(t, auc_floor, max_auc_drop) for t in cfg.task_names])
