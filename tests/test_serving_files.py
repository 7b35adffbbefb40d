"""The deployment files under serving/ are valid for the TF Serving version we pin, and agree with each other."""
import re
from pathlib import Path

import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

SERVING = Path(__file__).resolve().parent.parent / "serving"
BATCHING_KEYS = {"max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches",
                 "pad_variable_length_inputs", "allowed_batch_sizes"}


def _model_config(text: str):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def _batching_keys(text: str) -> set:
    return {m.group(1) for m in re.finditer(r"^\s*(\w+)\s*[:{]", text, re.M)}


def test_models_config_parses_and_names_the_pushed_model():
    cfg = _model_config((SERVING / "models.config").read_text())
    (model,) = cfg.model_config_list.config
    assert model.name == "mdl" and model.base_path.endswith("/mdl") and model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 2


def test_batching_files_use_known_parameters():
    assert _batching_keys((SERVING / "batching.config").read_text()) <= BATCHING_KEYS
    cm = yaml.safe_load((SERVING / "k8s" / "configmap.yaml").read_text())
    assert _batching_keys(cm["data"]["batching.config"]) <= BATCHING_KEYS
    assert _model_config(cm["data"]["models.config"]).model_config_list.config[0].name == "mdl"


def test_images_match_the_pinned_tensorflow_and_flags_point_at_mounted_files():
    minor = ".".join(tf.__version__.split(".")[:2])  # TF Serving ships 2.16.1 for TF 2.16.x
    compose = yaml.safe_load((SERVING / "docker-compose.yaml").read_text())
    svc = compose["services"]["tf-serving"]
    deployment = yaml.safe_load((SERVING / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for image, args in ((svc["image"], svc["command"]), (container["image"], container["args"])):
        assert image.startswith(f"tensorflow/serving:{minor}.")
        assert "--model_config_file=/config/models.config" in args
        assert "--enable_model_warmup=true" in args and "--enable_batching=true" in args
    mounted = {v.split(":")[0] for v in svc["volumes"]}
    assert {"./models.config", "./batching.config"} <= mounted
    assert all((SERVING / m).exists() for m in mounted if m.startswith("./"))
    service = yaml.safe_load((SERVING / "k8s" / "service.yaml").read_text())
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}


def test_pipeline_image_installs_the_pins_with_keras_2_and_ships_the_schemas():
    root = SERVING.parent
    text = (root / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.10[.\d]*-", text, re.M)  # TFX 1.16 needs Python 3.10
    assert "TF_USE_LEGACY_KERAS=1" in text
    assert "-c constraints.txt -r requirements.txt" in text
    for folder in ("mdl_tf", "tfx_pipeline", "schemas"):
        assert f"COPY {folder} ./{folder}" in text
    from tfx_pipeline.kubeflow_v2_runner import compile_pipeline
    import inspect

    assert "/app/schemas/" in inspect.getsource(compile_pipeline)  # the default schema URI is inside the image
