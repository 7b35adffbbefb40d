"""The paper's baselines (MDL_SPEC §10) on MDL's tokenizer and a RankMixer backbone, all under one interface."""
from mdl_tf.models.baselines.backbone import BACKBONE_DEFAULTS, BackboneModel
from mdl_tf.models.baselines.dffm import DFFMModel
from mdl_tf.models.baselines.mixtures import HMoEModel, PLEModel
from mdl_tf.models.baselines.pepnet import PEPNetModel
from mdl_tf.models.baselines.simple import MMoEModel, RankMixerModel, SharedBottomModel
from mdl_tf.models.baselines.star import STARModel

BASELINES = {m.model_name: m for m in (RankMixerModel, SharedBottomModel, MMoEModel, PLEModel, STARModel,
                                       HMoEModel, PEPNetModel, DFFMModel)}

__all__ = ["BASELINES", "BACKBONE_DEFAULTS", "BackboneModel", *[m.__name__ for m in BASELINES.values()]]
