"""The TFX production path: ExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> Transform ->
Trainer -> Evaluator (latest blessed model as baseline) -> Pusher, laid out like the TFX template.

pipeline/configs.py    defaults and the custom config both Transform and Trainer read
pipeline/pipeline.py   create_pipeline(): the component graph
pipeline/eval_config.py  the TFMA EvalConfig (one head per task, per-scenario slices, blessing thresholds)
models/preprocessing.py  the TF Transform preprocessing_fn
models/model.py        the Trainer run_fn (any registered model by name)
components/            the anomalies gate
local_runner.py / kubeflow_v2_runner.py   the runners (`mdl-tf pipeline run|compile`)
"""
