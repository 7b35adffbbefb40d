"""Keras layers of MDL: one concept per layer, all serializable (`get_config`)."""
from mdl_tf.layers.attention import DomainAwareAttention
from mdl_tf.layers.block import MDLBlock
from mdl_tf.layers.embedding import SparseEmbedding, TargetAttentionPooling
from mdl_tf.layers.fusion import DomainFusion
from mdl_tf.layers.heads import ScenarioTowers, TaskHeads
from mdl_tf.layers.mixing import RankMixerBlock, TokenMixing
from mdl_tf.layers.per_token import PerTokenDense, PerTokenFFN
from mdl_tf.layers.tokenizers import DomainTokenizer, FeatureEmbedder, FeatureTokenizer

__all__ = ["DomainAwareAttention", "DomainFusion", "DomainTokenizer", "FeatureEmbedder", "FeatureTokenizer",
           "MDLBlock", "PerTokenDense", "PerTokenFFN", "RankMixerBlock", "ScenarioTowers", "SparseEmbedding", "TargetAttentionPooling",
           "TaskHeads", "TokenMixing"]
