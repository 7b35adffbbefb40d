"""Pipeline defaults and the custom config that the Transform and the Trainer both read.

The feature config (`schemas/<dataset>/features.yaml`) travels inside the custom config, so the preprocessing_fn,
the run_fn, the serving signatures and the Evaluator see the same roles, in-process or on Kubeflow.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from mdl_tf import config as cfgmod

PIPELINE_NAME = "mdl-tf"          # KFP v2 requires [a-z0-9][a-z0-9-]*: no underscores
MODEL_NAME = "mdl"                 # the TF Serving model name: <serving_root>/<MODEL_NAME>/<version>/
TRAIN_STEPS = 2000
EVAL_STEPS = None                  # None: the whole eval split
BATCH_SIZE = 512
EPOCHS = 4                         # TRAIN_STEPS split into this many checkpoints for best-epoch selection
AUC_FLOOR = 0.55                   # per task, on the overall slice: a model below it is never blessed
MAX_AUC_DROP = 0.01                # per task, overall slice: allowed AUC drop against the last blessed model
WARMUP_REQUESTS = 16

_CODE_DIRS = ("mdl_tf", "tfx_pipeline")


def code_fingerprint() -> str:
    """sha256 over this project's Python sources.

    The Transform and Trainer reference installed functions by name (no module wheel), which TFX does not hash;
    putting this fingerprint into their custom config makes a code change invalidate their cache entries.
    """
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for d in _CODE_DIRS:
        for path in sorted((root / d).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def custom_config(cfg: cfgmod.FeatureConfig, **extra) -> dict:
    """JSON-serialisable custom config: {'feature_config': ..., 'code_version': ..., **extra}."""
    return {"feature_config": cfg.to_dict(), "code_version": code_fingerprint(), **extra}


def feature_config_from(custom_config: dict) -> cfgmod.FeatureConfig:
    if not custom_config or "feature_config" not in custom_config:
        raise cfgmod.ConfigError("custom_config has no 'feature_config'; build it with "
                                 "tfx_pipeline.pipeline.configs.custom_config(cfg)")
    return cfgmod.from_dict(custom_config["feature_config"], "custom_config.feature_config")


def onboarding_config(cfg: cfgmod.FeatureConfig, name: str) -> cfgmod.FeatureConfig:
    """The feature config of a pipeline run that onboards scenario `name`: `cfg` with `name` appended, or `cfg`
    itself when features.yaml already lists `name` last (the config the onboarded model will have). Raises
    ConfigError for a name that is not a valid scenario value or that features.yaml lists before other scenarios
    (an existing scenario, not a new one)."""
    sc = cfg.scenario
    bad = not name or name != name.strip() or "/" in name or (sc.separator and sc.separator in name)
    if bad:
        raise cfgmod.ConfigError(f"--add-scenario {name!r}: not a valid scenario name; use a non-empty name without "
                                 f"surrounding spaces, '/'{' or ' + repr(sc.separator) if sc.separator else ''}")
    if name in sc.values[:-1]:
        raise cfgmod.ConfigError(f"--add-scenario {name}: features.yaml lists {name!r} among the existing scenarios "
                                 f"({list(sc.values)}); give a new scenario's name (features.yaml may list it last)")
    return cfg if sc.values[-1] == name else cfgmod.with_scenario(cfg, name)


def onboard_settings(train: dict | None) -> dict:
    """The OnboardConfig fields (epochs, batch size, learning rates, seed) of the pipeline's train settings: `mdl-tf
    pipeline run` passes all of them, so its --epochs / --batch-size / --dense-lr / --sparse-lr / --seed (with
    their defaults) train the token; a caller that leaves one out gets OnboardConfig's default."""
    from mdl_tf.training.onboarding_settings import OnboardConfig

    known = {f.name for f in dataclasses.fields(OnboardConfig)}
    return {k: v for k, v in (train or {}).items() if k in known}
