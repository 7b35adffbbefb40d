# The pipeline image for Kubeflow Pipelines v2 / Vertex AI (`mdl-tf pipeline compile --image <this image>`):
# every TFX component runs in it, so it holds the pinned requirements and this project, with Keras 2 forced.
#   docker build -t REGISTRY/mdl-tf:0.1 . && docker push REGISTRY/mdl-tf:0.1
FROM python:3.10.13-slim-bookworm

# Keras 2 before TensorFlow is imported, in every process the image starts (components, Beam workers).
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install -c constraints.txt -r requirements.txt

COPY pyproject.toml README.md ./
COPY mdl_tf ./mdl_tf
COPY tfx_pipeline ./tfx_pipeline
# The compiled pipeline reads /app/schemas/<dataset>/schema.pbtxt unless --schema-uri says otherwise.
COPY schemas ./schemas
RUN pip install --no-deps . && python -c "import mdl_tf, tfx_pipeline.models.model"
