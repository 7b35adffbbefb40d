import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import layers as L
from mdl_tf.models.baselines.mixtures import CGCLayer


def _x(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


def test_per_token_dense_applies_each_tokens_own_matrix():
    layer = L.PerTokenDense(5)
    x = _x(3, 4, 6)
    y = layer(x).numpy()
    w, b = layer.kernel.numpy(), layer.bias.numpy()
    for n in range(4):
        np.testing.assert_allclose(y[:, n], x.numpy()[:, n] @ w[n] + b[n], rtol=1e-5, atol=1e-5)
    assert layer.kernel.shape == (4, 6, 5)
    assert not np.allclose(w[0], w[1])  # distinct weights per token


def test_token_mixing_is_a_permutation_and_its_own_inverse():
    x = _x(2, 4, 8)
    mix = L.TokenMixing()
    y = mix(x)
    assert y.shape == x.shape
    np.testing.assert_array_equal(np.sort(y.numpy().ravel()), np.sort(x.numpy().ravel()))
    np.testing.assert_array_equal(mix.inverse(y).numpy(), x.numpy())
    # output token h holds slice h of every input token
    np.testing.assert_array_equal(y.numpy()[:, 1, 2:4], x.numpy()[:, 1, 2:4])
    np.testing.assert_array_equal(y.numpy()[:, 1, 0:2], x.numpy()[:, 0, 2:4])
    with pytest.raises(ValueError, match="divisible by the number of tokens"):
        L.TokenMixing()(_x(2, 3, 8))


@pytest.mark.parametrize("variant", ["rankmixer", "eq6_literal"])
def test_rankmixer_block_variants(variant):
    block = L.RankMixerBlock(2, variant=variant)
    y = block(_x(3, 4, 8))
    assert y.shape == (3, 4, 8)
    if variant == "rankmixer":  # ends in LayerNorm: zero mean per token
        np.testing.assert_allclose(y.numpy().mean(-1), 0.0, atol=1e-5)
    assert hasattr(block, "norm2") == (variant == "rankmixer")


def test_domain_aware_attention_softmax_runs_over_feature_tokens():
    att = L.DomainAwareAttention(d_model=8, num_feature_tokens=5, num_heads=2)
    out, w = att(_x(3, 4, 8), _x(3, 5, 8, seed=1), return_attention=True)
    assert out.shape == (3, 4, 8) and w.shape == (3, 2, 4, 5)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-5)
    assert att.query.kernel.shape == (4, 8, 8) and att.key_value_proj.kernel.shape == (5, 8, 16)
    assert not att.query.use_bias


def test_domain_tokens_do_not_mix_among_themselves():
    att = L.DomainAwareAttention(d_model=8, num_feature_tokens=5, num_heads=2)
    q, f = _x(3, 4, 8), _x(3, 5, 8, seed=1)
    base = att(q, f).numpy()
    q2 = q.numpy().copy()
    q2[:, 2] += 10.0
    moved = att(tf.constant(q2), f).numpy()
    np.testing.assert_array_equal(np.delete(moved, 2, axis=1), np.delete(base, 2, axis=1))


def test_domain_fusion_formula_with_multi_hot_and_empty_rows():
    states = _x(3, 4, 2)  # 3 scenarios + global
    m = tf.constant([[1, 0, 0], [1, 0, 1], [0, 0, 0]], tf.float32)
    s = states.numpy()
    out = L.DomainFusion()(states, m).numpy()
    np.testing.assert_allclose(out[0], (s[0, 0] + s[0, 3]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], (s[1, 0] + s[1, 2] + s[1, 3]) / 3, rtol=1e-6)
    np.testing.assert_allclose(out[2], s[2, 3], rtol=1e-6)  # unseen scenario: global token alone
    no_global = L.DomainFusion(use_global_token=False)(states[:, :3], m).numpy()
    np.testing.assert_allclose(no_global[1], (s[1, 0] + s[1, 2]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(no_global[2], 0.0)


def test_task_heads_one_per_task():
    heads = L.TaskHeads()
    t = _x(4, 3, 8)
    z = heads(t)
    assert z.shape == (4, 3) and z.dtype == tf.float32
    w = heads.proj.kernel.numpy()
    np.testing.assert_allclose(z.numpy()[:, 1], t.numpy()[:, 1] @ w[1, :, 0] + heads.proj.bias.numpy()[1, 0],
                               rtol=1e-5)
    assert L.TaskHeads("mlp")(t).shape == (4, 3)


def test_domain_tokenizer_is_sample_dependent_with_global_token_last():
    tok = L.DomainTokenizer(3, {"user_id": 10}, d_model=8, embedding_dim=4, global_token=True)
    ids = {"user_id": tf.constant([2, 3], tf.int64)}
    t = tok(ids).numpy()
    assert t.shape == (2, 4, 8) and (t >= 0).all()  # ReLU output
    assert not np.allclose(t[0], t[1])  # different users, different tokens
    priors = tok.__class__(3, {"user_id": 10}, d_model=8, embedding_dim=4)(ids, priors=_x(2, 3, 2))
    assert priors.shape == (2, 3, 8)
    with pytest.raises(ValueError, match="sample-dependent"):
        L.DomainTokenizer(3, {}, d_model=8)


@pytest.mark.parametrize("layer", [
    L.PerTokenDense(4), L.PerTokenFFN(8, num_layers=1), L.TokenMixing(), L.RankMixerBlock(2, "eq6_literal"),
    L.DomainAwareAttention(8, 5, num_heads=2, prenorm=True), L.DomainFusion(False), L.TaskHeads("mlp"),
    L.ScenarioTowers(3, 8), L.TargetAttentionPooling("mean"),
    L.MDLBlock(4, 8, 2, attn_heads=2, share_kv=True, kv_source="previous", fuse_state="post_ffn"),
    L.DomainTokenizer(2, {"u": 5}, 8, 4, global_token=True, global_input="id"),
    CGCLayer(2, task_experts=2, shared_experts=3, units=8)])
def test_layers_serialize(layer):
    """get_config holds every constructor argument (a missing one with a default would make the clone fall back to
    the default and still compare equal), and from_config rebuilds the same configuration."""
    import inspect

    config = layer.get_config()
    keras_own = set(inspect.signature(tf.keras.layers.Layer.__init__).parameters)  # trainable, name, dynamic, ...
    args = [p.name for p in inspect.signature(layer.__class__.__init__).parameters.values()
            if p.name not in keras_own and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert set(args) <= set(config), sorted(set(args) - set(config))
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
