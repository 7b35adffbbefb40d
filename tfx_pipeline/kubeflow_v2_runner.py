"""Compile the pipeline to Kubeflow Pipelines v2 / Vertex AI Pipelines JSON (`mdl-tf pipeline compile`).

Nothing runs here: KubeflowV2DagRunner writes the pipeline spec, which `kfp.Client().create_run_from_pipeline_package`
or `aiplatform.PipelineJob` submits. Every step runs in `image`, which must hold this project installed with
`TF_USE_LEGACY_KERAS=1` set (see the Dockerfile); the preprocessing_fn and run_fn are referenced by module path, so
no module wheel is built or uploaded. Paths (data, schema, roots) are as the cluster sees them (gs://, s3://, a
mounted volume).
"""
from __future__ import annotations

import json
from pathlib import Path

from mdl_tf import config as cfgmod
from mdl_tf.schema import SCHEMA_FILE, check_schema_file, schema_dir_of
from tfx_pipeline.pipeline import configs
from tfx_pipeline.pipeline.pipeline import create_pipeline


def compile_pipeline(*, image: str, out, data_root: str, schema_dir, pipeline_root: str, serving_root: str,
                     schema_uri: str | None = None, model: str = "mdl", model_name: str = configs.MODEL_NAME,
                     hparams: dict = None, train: dict = None, train_steps: int = configs.TRAIN_STEPS,
                     beam_pipeline_args=None, fail_on_anomalies: bool = False,
                     pipeline_name: str = configs.PIPELINE_NAME, warm_start: bool = False,
                     add_scenario: str | None = None) -> dict:
    """Write the KFP v2 JSON to `out` and return it parsed.

    schema_dir: the local schema directory (its features.yaml is embedded into the spec); schema_uri: where the
    pipeline reads schema.pbtxt at run time (default: the same directory under /app inside the image)."""
    from tfx import v1 as tfx

    from tfx_pipeline.models.model import check_trainer_settings

    check_trainer_settings(model, hparams, train)  # names and training settings: refused before a spec is written
    schema_dir = schema_dir_of(schema_dir)
    cfg = cfgmod.load(schema_dir)
    local_schema = Path(schema_dir) / SCHEMA_FILE
    if schema_uri is None and local_schema.exists():  # the image ships this folder (schema_uri names another file)
        check_schema_file(cfg, local_schema)
    schema_uri = schema_uri or f"/app/schemas/{Path(schema_dir).name}/schema.pbtxt"
    pipeline = create_pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root, data_root=data_root, schema_file=schema_uri,
        feature_config=cfg, serving_root=serving_root, model=model, hparams=hparams, train=train,
        model_name=model_name, train_steps=train_steps, fail_on_anomalies=fail_on_anomalies,
        beam_pipeline_args=beam_pipeline_args, warm_start=warm_start, add_scenario=add_scenario)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")  # written aside, then renamed: `out` is whole or untouched
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(out.parent), output_filename=tmp.name)
    runner.run(pipeline, write_out=True)
    spec = json.loads(tmp.read_text())
    tmp.replace(out)
    return spec
