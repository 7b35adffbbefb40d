"""MDLModel: the exact invariants of MDL_SPEC §4.7, the cost formula of §6, export and precision paths."""
import copy
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf.data import synthetic
from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.models import build_model
from mdl_tf.models.mdl import MDL_DEFAULTS
from mdl_tf.training.losses import masked_multitask_loss

# Wiring tests perturb weights and compare outputs: a random (Glorot) head makes every path visible in the logits,
# where the default zero head would hide them all until trained. The default head has its own tests below.
SMALL = dict(d_model=16, num_layers=2, ffn_multiplier=2, attn_heads=2, head_init="glorot")


@pytest.fixture()
def model(synth_cfg, synth_batch):
    tf.keras.utils.set_random_seed(0)
    return build_model("mdl", synth_cfg, synth_batch[1], **SMALL)


def _feature_tokens_per_block(model, features):
    embedded = model.embedder(features)
    t_f = model.feature_tokenizer(embedded)
    t_s = model.scenario_tokenizer(features, embedded=embedded)
    t_t = model.task_tokenizer(features, embedded=embedded)
    m = features[SCENARIO_MASK]
    out = []
    for block in model.blocks:
        t_f, t_s, t_t = block(t_f, t_s, t_t, m)
        out.append(t_f.numpy())
    return out


def _perturb(variables, scale=0.5, rows=None):
    for v in variables:
        noise = np.random.default_rng(1).normal(scale=scale, size=v.shape).astype(np.float32)
        if rows is not None:
            keep = np.zeros(v.shape[0], bool)
            keep[rows] = True
            noise[~keep] = 0.0
        v.assign_add(noise)


def test_outputs_are_named_probabilities_per_task(model, synth_batch):
    out = model(synth_batch[2])
    assert sorted(out) == ["click", "purchase"]
    for p in out.values():
        assert p.shape == (64,) and ((p.numpy() > 0) & (p.numpy() < 1)).all()
    assert model.compute_logits(synth_batch[2]).shape == (64, 2)


def test_invariant_features_never_read_domain_tokens(model, synth_batch):
    feats = dict(synth_batch[2])
    before = _feature_tokens_per_block(model, feats)
    _perturb(model.scenario_tokenizer.trainable_variables + model.task_tokenizer.trainable_variables)
    feats[SCENARIO_MASK] = tf.reverse(feats[SCENARIO_MASK], axis=[1])
    after = _feature_tokens_per_block(model, feats)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    with tf.GradientTape() as tape:
        embedded = model.embedder(feats)
        t_s = model.scenario_tokenizer(feats, embedded=embedded)
        tape.watch(t_s)
        t_f = model.feature_tokenizer(embedded)
        t_t = model.task_tokenizer(feats, embedded=embedded)
        for block in model.blocks:
            t_f, t_s2, t_t = block(t_f, t_s, t_t, feats[SCENARIO_MASK])
    assert tape.gradient(t_f, t_s) is None


def _scenario_token_kernels(model):
    """Per-scenario-token weights, each [N_s + 1, ...] (row k = scenario k, last = global)."""
    ks = [model.scenario_tokenizer.ffn.inner.kernel, model.scenario_tokenizer.ffn.outer.kernel]
    for block in model.blocks:
        ks.append(block.attn_s.query.kernel)
        if block.ffn_s is not None:
            ks += [block.ffn_s.inner.kernel, block.ffn_s.outer.kernel]
    return ks


@pytest.mark.parametrize("k,global_input", [(0, "mean_spec"), (2, "mean_spec"), (0, "id"), (2, "id")])
def test_invariant_non_member_scenario_token_cannot_affect_an_instance(synth_cfg, synth_batch, k, global_input):
    tf.keras.utils.set_random_seed(0)
    model = build_model("mdl", synth_cfg, synth_batch[1], global_input=global_input, **SMALL)
    feats = synth_batch[2]
    member = feats[SCENARIO_MASK].numpy()[:, k] > 0
    assert member.any() and (~member).any()
    before = model.compute_logits(feats).numpy()
    _perturb(_scenario_token_kernels(model), rows=[k])
    if global_input == "id":
        # With the default "mean_spec" the global token reads the mean of every scenario's ê_spec (MDL_SPEC §3.2),
        # so scenario k's spec embedding reaches all rows through the global token by design; with "id" it does not.
        _perturb([model.scenario_tokenizer.spec_embedding.embeddings], rows=[k])
    after = model.compute_logits(feats).numpy()
    np.testing.assert_array_equal(after[~member], before[~member])  # bit-exact in fp32
    assert np.abs(after[member] - before[member]).max() > 1e-4


@pytest.mark.parametrize("global_input", ["mean_spec", "id"])
def test_invariant_gradients_reach_own_and_global_scenario_tokens_only(synth_cfg, synth_batch, global_input):
    tf.keras.utils.set_random_seed(0)
    model = build_model("mdl", synth_cfg, synth_batch[1], global_input=global_input, **SMALL)
    feats = synth_batch[2]
    k = 1
    rows = np.flatnonzero(feats[SCENARIO_MASK].numpy().argmax(1) == k)
    rows = [r for r in rows if feats[SCENARIO_MASK].numpy()[r].sum() == 1]
    batch = {name: tf.gather(v, rows) for name, v in feats.items()}
    labels = tf.ones([len(rows), 2])
    variables = _scenario_token_kernels(model) + [model.scenario_tokenizer.spec_embedding.embeddings]
    with tf.GradientTape() as tape:
        loss = masked_multitask_loss(labels, model.compute_logits(batch), tf.ones_like(labels))
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
    n_s = synth_cfg.num_scenarios
    for g in grads[:-1]:
        per_token = np.abs(g).reshape(g.shape[0], -1).sum(1)
        assert per_token[k] > 0 and per_token[n_s] > 0, per_token     # own token and the global token
        assert (per_token[[j for j in range(n_s) if j != k]] == 0).all(), per_token
    spec = np.abs(grads[-1]).sum(1)
    if global_input == "id":
        assert spec[k] > 0 and spec[n_s] > 0 and (spec[[j for j in range(n_s) if j != k]] == 0).all()
    else:  # the global token's input is the mean of every scenario's spec embedding, by design (MDL_SPEC §3.2)
        assert (spec[:n_s] > 0).all()


def test_invariant_label_mask_gives_zero_loss_and_gradient():
    logits = tf.Variable([[0.3, 50.0], [-1.0, 2.0]])
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    mask = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    with tf.GradientTape() as tape:
        loss = masked_multitask_loss(labels, logits, mask)
    g = tape.gradient(loss, logits).numpy()
    assert g[0, 1] == 0.0 and g[0, 0] != 0.0
    flipped = masked_multitask_loss(tf.constant([[1.0, 1.0], [0.0, 1.0]]), logits, mask)
    assert float(flipped) == float(loss)
    per_task = masked_multitask_loss(labels, logits, mask, norm="per_task")
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels, logits).numpy()
    assert float(per_task) == pytest.approx((bce[0, 0] + bce[1, 0]) / 2 + bce[1, 1], rel=1e-6)


def test_invariant_distinct_weights_per_token_and_layer(model):
    b0, b1 = model.blocks
    assert b0.feature.ffn.inner.kernel is not b1.feature.ffn.inner.kernel
    assert not np.allclose(b0.attn_t.query.kernel.numpy(), b1.attn_t.query.kernel.numpy())
    q = b0.attn_s.query.kernel.numpy()
    assert all(not np.allclose(q[i], q[j]) for i in range(len(q)) for j in range(i + 1, len(q)))
    names = [v.name for v in model.trainable_variables]
    assert len(names) == len(set(names))
    assert b1.ffn_s is None and b0.ffn_s is not None  # last layer's scenario FFN is omitted (§4.6)


def test_block_parameter_count_matches_the_cost_formula(synth_cfg, synth_batch):
    d, k, n_f = 16, 2, synth_cfg.num_token_groups
    n_d = synth_cfg.num_scenarios + 1 + synth_cfg.num_tasks
    model = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    kernels = sum(int(np.prod(v.shape)) for v in model.blocks[0].trainable_variables if "kernel" in v.name)
    assert kernels == d * d * (2 * k * n_f + 4 * n_f + (2 * k + 1) * n_d)
    last = sum(int(np.prod(v.shape)) for v in model.blocks[1].trainable_variables if "kernel" in v.name)
    assert kernels - last == 2 * k * (synth_cfg.num_scenarios + 1) * d * d
    shared = build_model("mdl", synth_cfg, synth_batch[1], share_kv=True, **SMALL)
    k_shared = sum(int(np.prod(v.shape)) for v in shared.blocks[0].trainable_variables if "kernel" in v.name)
    assert kernels - k_shared == 2 * n_f * d * d


def test_optimizer_split_puts_every_table_on_the_sparse_side(model):
    dense, sparse = model.variable_groups()
    assert sparse and all("emb" in v.name or "imp_" in v.name or "spec_embedding" in v.name for v in sparse)
    assert not any("embeddings" in v.name for v in dense)
    counts = model.param_counts()
    assert counts["dense"] == sum(int(np.prod(v.shape)) for v in dense)


def test_bad_hyperparameters_are_named(synth_cfg, synth_batch):
    with pytest.raises(ValueError, match="d_model=18 must be divisible by N_f=4"):
        build_model("mdl", synth_cfg, synth_batch[1], d_model=18)
    with pytest.raises(ValueError, match="unknown model 'mmm'"):
        build_model("mmm", synth_cfg, synth_batch[1])
    with pytest.raises(ValueError, match="kv_source must be one of"):
        build_model("mdl", synth_cfg, synth_batch[1], kv_source="later", **{k: v for k, v in SMALL.items()})


@pytest.mark.parametrize("flags", [
    dict(feature_block="eq6_literal"), dict(kv_source="previous"), dict(attn_out_proj=True, attn_bias=True),
    dict(domain_prenorm=False), dict(domain_token_norm=False), dict(head_init="small"), dict(imp_tables="own"),
    dict(dropout=0.2), dict(domain_ffn_multiplier=1), dict(share_kv=True), dict(init_ffn_layers=1), dict(global_input="id"),
    dict(fuse_state="post_ffn"), dict(head="mlp"), dict(last_scenario_ffn=True), dict(tokenizer="slice"),
    dict(tokenizer="slice", feature_tokens=8), dict(domain_ffn_prenorm=True),
    dict(tokenizer="feature", d_model=24),  # N_f = the 12 synthetic features
    dict(head_input="task_token_and_pool"), dict(head_input="task_token_and_pool", head="mlp"),
    dict(seq_encoder="mean"), dict(use_global_token=False), dict(use_scenario_tokens=False), dict(attn_heads=1)])
def test_every_flag_builds_and_trains_a_step(synth_cfg, synth_batch, flags):
    hp = {**SMALL, **flags}
    model = build_model("mdl", synth_cfg, synth_batch[1], **hp)
    # Eagerly: the same train_step in 2-3 s instead of ~20 s of tracing per flag; graph mode (and XLA) runs in the
    # precision tests below and in every training test.
    model.compile(run_eagerly=True)
    feats = synth_batch[2]
    labels = tf.cast(tf.random.uniform([64, 2]) > 0.5, tf.float32)
    logs = model.train_on_batch(feats, {"labels": labels, "label_mask": tf.ones_like(labels)}, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_domain_ffn_prenorm_feeds_each_domain_ffn_and_the_heads_a_normalised_stream(synth_cfg, synth_batch):
    """domain_ffn_prenorm: PFFN_s and PFFN_t read LN(x), so what each adds to its residual stream is the same when
    the stream is scaled by 10 (not so without the flag); the heads read the task stream through a LayerNorm; and
    onboarding, whose appended tokens run their own FFNs without those norms, refuses such a model."""
    from mdl_tf.models.onboarded import check_onboardable

    feats = synth_batch[2]
    for flag in (False, True):
        model = build_model("mdl", synth_cfg, synth_batch[1], domain_ffn_prenorm=flag, **SMALL)
        t_f, t_s, t_t = model.tokens(feats)
        added = []
        for scale in (1.0, 10.0):
            state = {"t_f": t_f, "t_s": t_s, "s_hat": scale * t_s, "t_hat": scale * t_t}
            _, new_s, new_t = model.blocks[0].update(state, None, s_bar=tf.zeros_like(t_t[:, 0]))
            added.append(np.concatenate([(new_s - scale * t_s).numpy(), (new_t - scale * t_t).numpy()], axis=1))
        assert np.allclose(added[0], added[1], atol=1e-4) == flag
        assert (model.head_norm is not None) == flag
    np.testing.assert_allclose(model.compute_logits(feats).numpy(), model.heads(model.head_norm(t_t)).numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="domain_ffn_prenorm"):
        check_onboardable(model)


def test_head_input_with_pool_gives_every_head_the_mean_feature_token(synth_cfg, synth_batch):
    """head_input="task_token_and_pool": head n reads exactly [T_t[:, n] ⊕ mean_j T_f[:, j]] (2d wide); the default
    reads the task token alone (d wide). Both start at the bias (zero head). Onboarding, whose appended task heads
    read their token alone, refuses it."""
    from mdl_tf.models.onboarded import check_onboardable

    feats = synth_batch[2]
    d = SMALL["d_model"]
    for head_input, width in (("task_token", d), ("task_token_and_pool", 2 * d)):
        model = build_model("mdl", synth_cfg, synth_batch[1], **{**SMALL, "head_init": "zeros"},
                            head_input=head_input)
        t_f, _, t_t = model.tokens(feats)
        assert model.heads.proj.kernel.shape == (2, width, 1)
        np.testing.assert_allclose(model.compute_logits(feats).numpy(), 0.0, atol=1e-6)  # zero head, zero bias
        model.heads.proj.kernel.assign(tf.random.normal(model.heads.proj.kernel.shape))
        pooled = tf.tile(tf.reduce_mean(t_f, axis=1, keepdims=True), [1, 2, 1])
        head_in = t_t if head_input == "task_token" else tf.concat([t_t, pooled], axis=-1)
        np.testing.assert_allclose(model.compute_logits(feats).numpy(), model.heads(head_in).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="head_input"):
        check_onboardable(model)
    with pytest.raises(ValueError, match="head_input must be one of"):
        build_model("mdl", synth_cfg, synth_batch[1], head_input="pool", **SMALL)


def test_ablation_without_scenario_tokens_has_no_scenario_weights(synth_cfg, synth_batch):
    full = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    ablated = build_model("mdl", synth_cfg, synth_batch[1], use_scenario_tokens=False, **SMALL)
    names = {v.name.split("/", 1)[-1] for v in ablated.trainable_variables}
    assert not any("scenario_tokenizer" in n or "scenario_attention" in n or "scenario_ffn" in n for n in names)
    assert any("scenario_towers" in n for n in names)
    no_global = build_model("mdl", synth_cfg, synth_batch[1], use_global_token=False, **SMALL)
    assert no_global.scenario_tokenizer.num_tokens == synth_cfg.num_scenarios
    assert full.scenario_tokenizer.num_tokens == synth_cfg.num_scenarios + 1


def test_mixed_precision_and_xla_agree_with_fp32(synth_cfg, synth_batch):
    feats = synth_batch[2]
    tf.keras.utils.set_random_seed(0)
    fp32 = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    ref = fp32.compute_logits(feats).numpy()
    mixed = build_model("mdl", synth_cfg, synth_batch[1], precision="mixed_float16", **SMALL)
    mixed.set_weights(fp32.get_weights())
    assert mixed.blocks[0].attn_s.query.compute_dtype == "float16"
    # float16 has ~3 significant digits; logits of order 1 agree to a few 1e-2.
    np.testing.assert_allclose(mixed.compute_logits(feats).numpy(), ref, atol=5e-2)
    xla = tf.function(lambda f: fp32.compute_logits(f), jit_compile=True)
    np.testing.assert_allclose(xla(feats).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("precision,jit", [("mixed_float16", False), ("float32", True), ("mixed_float16", True)])
def test_training_step_runs_under_mixed_precision_and_xla(synth_cfg, synth_batch, precision, jit):
    # One MDL layer: XLA compiles the whole train step, and a second identical layer only adds compile time.
    model = build_model("mdl", synth_cfg, synth_batch[1], precision=precision, **{**SMALL, "num_layers": 1})
    model.compile(jit_compile=jit)
    feats = synth_batch[2]
    labels = tf.cast(tf.random.uniform([64, 2], seed=1) > 0.5, tf.float32)
    before = [v.numpy().copy() for v in model.trainable_variables]
    # float16 starts with a loss scale of 2**15: the first steps may overflow and be skipped while the dynamic scale
    # halves (the LayerNormed domain tokens amplify gradients of their small-variance inputs); it must then train.
    for _ in range(16 if precision == "mixed_float16" else 2):
        logs = model.train_on_batch(feats, {"labels": labels, "label_mask": tf.ones_like(labels)}, return_dict=True)
    assert np.isfinite(logs["loss"])
    changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    assert changed > len(before) // 2


def test_single_scenario_and_single_task_configs_build_train_and_export(tmp_path, synth_dir):
    from mdl_tf.training.trainer import TrainConfig, train

    raw = copy.deepcopy(synthetic.FEATURES_YAML)
    raw["scenario"] = {"column": "scenario", "values": ["home"]}
    raw["tasks"] = [{"name": "click", "label": "click"}]
    schema = tmp_path / "schema"
    cfgmod.dump(cfgmod.from_dict(raw), schema / "features.yaml")
    metrics = train(synth_dir, schema, tmp_path / "out", TrainConfig(epochs=1, batch_size=256, verbose=0),
                    dict(d_model=16, num_layers=1, ffn_multiplier=2, attn_heads=2))  # configs, not depth, tested
    assert list(metrics["overall"]) == ["click"]
    assert set(metrics["per_scenario"]) == {"home", "unseen"}  # feed/search rows are unseen to this config
    loaded = tf.saved_model.load(str(tmp_path / "out" / "saved_model"))
    assert set(loaded.signatures["serving_default"].structured_outputs) == {"click_probability"}


def _logit_std(model, feats):
    return float(np.std(model.compute_logits(feats).numpy(), axis=0).max())


def test_default_zero_head_starts_at_the_bias_and_learns(synth_cfg, synth_batch):
    """MDL_MOVIELENS_REVIEW H1: a Glorot head on the un-normalised task stream starts with logits far from the
    baselines'; the default zero head starts every row at the bias, and its weights get gradient at once."""
    feats = synth_batch[2]
    tf.keras.utils.set_random_seed(0)
    default = build_model("mdl", synth_cfg, synth_batch[1], d_model=16, num_layers=2, ffn_multiplier=2, attn_heads=2)
    tf.keras.utils.set_random_seed(0)
    glorot = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    tf.keras.utils.set_random_seed(0)
    mmoe = build_model("mmoe", synth_cfg, synth_batch[1], d_model=16, hidden=16)
    assert _logit_std(default, feats) == 0.0
    assert _logit_std(glorot, feats) > 3 * _logit_std(mmoe, feats) > 0  # the spread the zero head removes
    labels = tf.cast(tf.random.stateless_uniform([64, 2], (1, 2)) < 0.3, tf.float32)
    with tf.GradientTape() as tape:
        loss = masked_multitask_loss(labels, default.compute_logits(feats), tf.ones_like(labels))
    kernel = default.heads.proj.kernel
    grad = tape.gradient(loss, kernel)
    assert float(tf.reduce_max(tf.abs(grad))) > 1e-4
    with pytest.raises(ValueError, match="head_init must be one of"):
        build_model("mdl", synth_cfg, synth_batch[1], head_init="ones", **{k: v for k, v in SMALL.items()
                                                                            if k != "head_init"})


def test_domain_token_norm_gives_unit_rms_tokens(synth_cfg, synth_batch):
    """Without it the domain tokens start at RMS ~0.02 with many exact zeros (review §1.3); with it every scenario and
    task token is LayerNormed to zero mean and unit variance over d (before the learned scale/shift moves)."""
    feats = synth_batch[2]
    tf.keras.utils.set_random_seed(0)
    plain = build_model("mdl", synth_cfg, synth_batch[1], domain_token_norm=False, **SMALL)
    tf.keras.utils.set_random_seed(0)
    normed = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)  # the default
    for tokenizer in (normed.scenario_tokenizer, normed.task_tokenizer):
        t = tokenizer(feats, embedded=normed.embedder(feats)).numpy()
        np.testing.assert_allclose(t.mean(-1), 0.0, atol=1e-4)
        np.testing.assert_allclose(t.var(-1), 1.0, rtol=0.06)  # LayerNorm eps vs the tiny raw variance
    assert np.sqrt((plain.scenario_tokenizer(feats, embedded=plain.embedder(feats)).numpy() ** 2).mean()) < 0.5


def test_diagnostics_of_an_untrained_default_mdl(synth_cfg, synth_batch):
    """The zero head is the only component with gradient at step 0 (nothing flows back through a zero kernel), the
    normalised domain tokens start at RMS 1, and every layer's attention entropy is at most ln N_f."""
    from mdl_tf.training import diagnostics

    feats = synth_batch[2]
    tf.keras.utils.set_random_seed(0)
    model = build_model("mdl", synth_cfg, synth_batch[1], d_model=16, num_layers=2, ffn_multiplier=2, attn_heads=2)
    labels = tf.cast(tf.random.stateless_uniform([64, 2], (1, 2)) < 0.3, tf.float32)
    grads = diagnostics.gradient_norms(model, feats, {"labels": labels, "label_mask": tf.ones_like(labels)})
    assert set(grads) == {"embedder", "feature_tokenizer", "scenario_tokenizer", "task_tokenizer", "mdl_block_0",
                          "mdl_block_1", "task_heads"}
    assert grads["task_heads"] > 1e-4
    assert all(v == 0.0 for k, v in grads.items() if k != "task_heads")
    norms = diagnostics.token_norms(model, feats)
    assert [n["layer"] for n in norms] == [0, 1, 2] and set(norms[0]) == {"layer", "feature", "scenario", "task"}
    assert norms[0]["scenario"] == pytest.approx(1.0, rel=0.03) and norms[0]["task"] == pytest.approx(1.0, rel=0.03)
    entropy = diagnostics.attention_entropy(model, feats)
    assert len(entropy) == 2 and all(0 < e["scenario"] <= e["uniform"] + 1e-6 for e in entropy)
    curves = diagnostics.learning_curves({"loss": [0.7, 0.6], "val_loss": [0.71, 0.65], "val_auc_click": [0.6, 0.7]})
    assert curves == {"train": {"loss": [0.7, 0.6]}, "eval": {"loss": [0.71, 0.65], "auc_click": [0.6, 0.7]}}


def test_shared_imp_tables_read_the_feature_embeddings_and_add_no_table(synth_cfg, synth_batch):
    """imp_tables="shared" (the default since MovieLens-1M, FINDINGS): ê_imp is the feature tokens' own embedding of
    each important feature (no extra id rows); "own" keeps the spec's separate tables."""
    feats = synth_batch[2]
    tf.keras.utils.set_random_seed(0)
    own = build_model("mdl", synth_cfg, synth_batch[1], imp_tables="own", **SMALL)
    tf.keras.utils.set_random_seed(0)
    shared = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    assert shared.hparams["imp_tables"] == "shared" and MDL_DEFAULTS["imp_tables"] == "shared"
    assert own.scenario_tokenizer.important_tables and own.task_tokenizer.important_tables
    assert shared.param_counts()["embedding"] < own.param_counts()["embedding"]
    assert shared.param_counts()["dense"] == own.param_counts()["dense"]
    assert not shared.scenario_tokenizer.important_tables and not shared.task_tokenizer.important_tables
    embedded = shared.embedder(feats)
    names = [f.name for f in synth_cfg.important_features("scenario")]
    np.testing.assert_array_equal(shared.scenario_tokenizer.important_inputs(feats, embedded).numpy(),
                                  tf.concat([embedded[n] for n in names], -1).numpy())
    # gradient reaches the feature tables through the domain tokens too
    table = shared.embedder.tables[names[0]].embeddings
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(shared.scenario_tokenizer(feats, embedded=shared.embedder(feats)))
    assert tape.gradient(out, table) is not None
    # ... and with "shared_stop_gradient" the domain tokens read the same rows but send no gradient into them.
    stopped = build_model("mdl", synth_cfg, synth_batch[1], imp_tables="shared_stop_gradient", **SMALL)
    assert stopped.param_counts() == shared.param_counts()
    stopped_table = stopped.embedder.tables[names[0]].embeddings
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(stopped.scenario_tokenizer(feats, embedded=stopped.embedder(feats)))
    assert tape.gradient(out, stopped_table) is None
    with pytest.raises(ValueError, match="imp_tables must be one of"):
        build_model("mdl", synth_cfg, synth_batch[1], imp_tables="both", **SMALL)
    with pytest.raises(ValueError, match="needs the feature embeddings"):
        shared.scenario_tokenizer(feats)


def test_important_features_override_chooses_what_the_domain_tokens_read(synth_cfg, synth_batch):
    """important_features replaces a domain's ê_imp features (a probe of the choice without editing features.yaml):
    the task tokens here read item_tags (multi-hot, pooled) and item_category instead of user_id and item_id."""
    feats = synth_batch[2]
    choice = {"task": ["item_tags", "item_category"]}
    model = build_model("mdl", synth_cfg, synth_batch[1], important_features=choice, **SMALL)
    default = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    assert list(model.task_tokenizer.important_vocab_sizes) == ["item_tags", "item_category"]
    assert list(model.scenario_tokenizer.important_vocab_sizes) == list(default.scenario_tokenizer.important_vocab_sizes)
    embedded = model.embedder(feats)
    np.testing.assert_array_equal(model.task_tokenizer.important_inputs(feats, embedded).numpy(),
                                  tf.concat([embedded["item_tags"], embedded["item_category"]], -1).numpy())
    assert model(feats)["click"].shape == (len(synth_batch[3]),)
    # recorded as plain JSON (Keras wraps the dict it holds), so an export rebuilds the same model
    from mdl_tf.models.base import with_all_hparams

    assert json.loads(json.dumps(with_all_hparams(model, {"hparams": {}})))["hparams"]["important_features"] == choice
    for bad, message in [({"task": ["item_price"]}, r"\['item_price'\]: features of kind categorical or multi_hot"),
                         ({"task": ["price"]}, r"\['price'\] not in feature config 'synthetic'"),
                         ({"task": "item_id"}, "give a non-empty list of feature names"),
                         ({"task": ["item_id", "item_id"]}, "listed twice"),
                         ({"tasks": ["item_id"]}, "unknown domain"),
                         ('{task: [item_id]}', "must be a mapping")]:
        with pytest.raises(ValueError, match=message):
            build_model("mdl", synth_cfg, synth_batch[1], important_features=bad, **SMALL)
    with pytest.raises(ValueError, match="of kind categorical only \\(imp_tables='own'\\)"):
        build_model("mdl", synth_cfg, synth_batch[1], important_features=choice, imp_tables="own", **SMALL)


def test_domain_dropout_acts_in_training_only_and_narrow_domain_ffns_shrink_only_them(synth_cfg, synth_batch):
    """dropout > 0: training logits change from call to call, inference logits are those of the dropout-free model
    with the same weights; domain_ffn_multiplier narrows the domain tokens' FFNs and leaves the feature block."""
    feats = synth_batch[2]
    tf.keras.utils.set_random_seed(0)
    plain = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    dropped = build_model("mdl", synth_cfg, synth_batch[1], dropout=0.5, **SMALL)
    dropped.set_weights(plain.get_weights())
    np.testing.assert_array_equal(dropped.compute_logits(feats).numpy(), plain.compute_logits(feats).numpy())
    first, second = (dropped.compute_logits(feats, training=True).numpy() for _ in range(2))
    assert not np.allclose(first, second) and not np.allclose(first, plain.compute_logits(feats).numpy())
    with pytest.raises(ValueError, match="dropout must be in"):
        build_model("mdl", synth_cfg, synth_batch[1], dropout=1.0, **SMALL)

    narrow = build_model("mdl", synth_cfg, synth_batch[1], domain_ffn_multiplier=1, **SMALL)
    d, mult = SMALL["d_model"], SMALL["ffn_multiplier"]
    block, ref = narrow.blocks[0], plain.blocks[0]
    assert block.ffn_t.inner.kernel.shape[-1] == d and ref.ffn_t.inner.kernel.shape[-1] == mult * d
    assert block.ffn_s.inner.kernel.shape[-1] == d and narrow.task_tokenizer.ffn.inner.kernel.shape[-1] == d
    assert [w.shape for w in block.feature.weights] == [w.shape for w in ref.feature.weights]
    assert narrow.param_counts()["dense"] < plain.param_counts()["dense"]


def test_an_onboarded_token_trains_against_a_deterministic_frozen_base(synth_cfg, synth_batch):
    """A base trained with domain-token dropout runs in inference mode inside OnboardedMDL, also while the new token
    trains: the onboarded model's logits are the same with training on and off (the base alone differs)."""
    from mdl_tf.data.transform import SCENARIO_MASK
    from mdl_tf.training.onboarding import make_onboarded, with_scenario

    tf.keras.utils.set_random_seed(0)
    base = build_model("mdl", synth_cfg, synth_batch[1], dropout=0.5, **SMALL)
    model = make_onboarded(with_scenario(synth_cfg, "promo"), base, [{"kind": "scenario", "name": "promo",
                                                                       "init_from": "global"}])
    feats = dict(synth_batch[2])
    mask = feats[SCENARIO_MASK]
    feats[SCENARIO_MASK] = tf.concat([mask, tf.zeros_like(mask[:, :1])], axis=1)
    # Through Keras' __call__, as fit calls it: training=True reaches every nested layer left without an argument.
    on, off = model(feats, training=True), model(feats, training=False)
    for task in on:
        np.testing.assert_array_equal(on[task].numpy(), off[task].numpy())
    on, off = base(synth_batch[2], training=True), base(synth_batch[2], training=False)
    assert not np.allclose(on["click"].numpy(), off["click"].numpy())


@pytest.mark.parametrize("global_input", ["id", "mean_spec"])
def test_fold_makes_an_onboarded_model_a_regular_mdl_with_the_same_outputs(synth_cfg, synth_batch, global_input):
    """fold (issue 18: a model onboarded in the pipeline carried into the next warm-started run): an onboarded
    scenario and task become rows of every per-token weight (the scenario before the global token, the task last)
    and the regular MDL computes the onboarded model's logits on rows in and out of the new scenario. With
    global_input="mean_spec" the global token reads the mean of all ê_spec rows: the fold keeps the new row at the
    base rows' mean and moves what it learnt into its first FFN bias, so the outputs match there too."""
    from mdl_tf.config import with_scenario, with_task
    from mdl_tf.data.transform import SCENARIO_MASK
    from mdl_tf.models.onboarded import fold, stream_layers
    from mdl_tf.training.onboarding import make_onboarded

    tf.keras.utils.set_random_seed(0)
    base = build_model("mdl", synth_cfg, synth_batch[1], global_input=global_input, **SMALL)
    n_s, n_t = synth_cfg.num_scenarios, synth_cfg.num_tasks
    cfg = with_task(with_scenario(synth_cfg, "live"), "fav", "click")
    model = make_onboarded(cfg, base, [{"kind": "scenario", "name": "live", "init_from": "global"},
                                       {"kind": "task", "name": "fav", "init_from": "click"}])
    scenario, task = model.appended
    for token in model.appended:  # as if trained: every slice away from the token it was copied from
        for w in token.weights:
            if not (token is scenario and w is scenario.spec.embeddings):
                w.assign(w + tf.random.normal(w.shape, stddev=0.3))
    feats = dict(synth_batch[2])
    live = (np.arange(64) % 3 == 0).astype(np.float32)[:, None]  # a third of the rows are also in "live"
    mask = feats[SCENARIO_MASK].numpy() * (1 - np.float32(np.arange(64) % 6 == 0))[:, None]  # some only in "live"
    feats[SCENARIO_MASK] = tf.constant(np.concatenate([mask, live], axis=1))

    folded = fold(model)
    assert folded.cfg.scenario.values[-1] == "live" and folded.cfg.task_names[-1] == "fav"
    query = stream_layers(folded, "scenario")[2].kernel.numpy()  # block 0's W_Q: [N_s + 1 new + global, d, d]
    np.testing.assert_array_equal(query[:n_s], base.blocks[0].attn_s.query.kernel.numpy()[:n_s])
    np.testing.assert_array_equal(query[n_s], scenario.queries[0].kernel.numpy()[0])
    np.testing.assert_array_equal(query[n_s + 1], base.blocks[0].attn_s.query.kernel.numpy()[n_s])
    head = folded.heads.proj.kernel.numpy()
    np.testing.assert_array_equal(head[n_t], task.head.kernel.numpy()[0])
    want = model.compute_logits(feats).numpy()
    np.testing.assert_allclose(folded.compute_logits(feats).numpy(), want, atol=2e-5)
    assert np.abs(want[:, :n_t] - base.compute_logits(synth_batch[2]).numpy()).max() > 1e-3  # "live" rows moved

    spec = scenario.spec.embeddings
    spec.assign(spec + tf.random.normal(spec.shape, stddev=0.5))  # the new ê_spec row trained away from its start
    moved = model.compute_logits(feats).numpy()
    assert np.abs(moved - want).max() > 1e-3
    again = fold(model)
    np.testing.assert_allclose(again.compute_logits(feats).numpy(), moved, atol=2e-5)
    rows = again.scenario_tokenizer.spec_embedding.embeddings.numpy()
    if global_input == "mean_spec":  # the row stays where the global token's mean needs it
        np.testing.assert_allclose(rows[n_s], rows[:n_s].mean(axis=0), atol=1e-6)
    else:
        np.testing.assert_array_equal(rows[n_s], spec.numpy()[0])


def test_a_savedmodel_from_before_full_hparams_is_rebuilt_as_it_was_trained(synth_cfg, synth_batch, tmp_path):
    """Exports record every hparam; a SavedModel whose metadata holds only the passed ones (exported before, when
    MDL's default was imp_tables="own") is rebuilt with its own ê_imp tables, weights equal; a current export is
    rebuilt as recorded."""
    import json

    from mdl_tf.export import METADATA_FILE, export_saved_model, rebuild_model

    tf.keras.utils.set_random_seed(0)
    old = build_model("mdl", synth_cfg, synth_batch[1], imp_tables="own", **SMALL)
    path = export_saved_model(old, synth_batch[0], synth_cfg, tmp_path / "saved_model",
                              metadata={"model": "mdl", "hparams": dict(SMALL)})
    meta_file = path / "assets.extra" / METADATA_FILE
    meta = json.loads(meta_file.read_text())
    assert meta["hparams"] == old.hparams and meta["hparams"]["imp_tables"] == "own"
    meta["hparams"] = dict(SMALL)  # what an export before this change wrote
    meta_file.write_text(json.dumps(meta))

    def build(hp):
        return build_model("mdl", synth_cfg, synth_batch[1], **hp)

    model, hp = rebuild_model(path, meta, build)
    assert hp["imp_tables"] == "own" and model.scenario_tokenizer.important_tables
    np.testing.assert_array_equal(model.compute_logits(synth_batch[2]).numpy(),
                                  old.compute_logits(synth_batch[2]).numpy())
    tf.keras.utils.set_random_seed(1)
    new = build_model("mdl", synth_cfg, synth_batch[1], **SMALL)
    path = export_saved_model(new, synth_batch[0], synth_cfg, tmp_path / "new", metadata={"model": "mdl"})
    meta = json.loads((path / "assets.extra" / METADATA_FILE).read_text())
    model, hp = rebuild_model(path, meta, build)
    assert hp == new.hparams and hp["imp_tables"] == "shared"
    np.testing.assert_array_equal(model.compute_logits(synth_batch[2]).numpy(),
                                  new.compute_logits(synth_batch[2]).numpy())
    # A recorded hparam this version no longer takes: the error names the metadata file, not a Keras keyword.
    from mdl_tf.errors import InvalidSetting

    with pytest.raises(InvalidSetting, match=rf"^{re.escape(str(path / 'assets.extra' / METADATA_FILE))}: its "
                                             r"hparams cannot rebuild .*mdl has no hyperparameter retired_flag"):
        rebuild_model(path, {**meta, "hparams": {**meta["hparams"], "retired_flag": 1}}, build)
    # A model this version does not register (what `bench onboarding` rebuilds from meta["model"]): named as such.
    with pytest.raises(InvalidSetting, match=r"its model is not registered in this version .*unknown model 'old_mdl'"):
        rebuild_model(path, meta, lambda hp: build_model("old_mdl", synth_cfg, synth_batch[1], **hp))


def test_priors_feed_only_their_own_domain_token_and_the_global_one(synth_batch):
    """ê_spec^k ⊕ priors_k (MDL_SPEC §3.2): scenario k's token changes with its own priors (and the global token,
    whose spec input is their mean), no other scenario token does; use_priors=False leaves every domain token
    alone."""
    from tests.test_config import _with_priors

    cfg = cfgmod.from_dict(_with_priors(copy.deepcopy(synthetic.FEATURES_YAML), per_scenario=2), "priors.yaml")
    feats = dict(synth_batch[2])
    names = [n for row in cfg.domain_priors("scenario") + cfg.domain_priors("task") for n in row]
    rng = np.random.default_rng(0)
    feats.update({n: tf.constant(rng.normal(size=64), tf.float32) for n in names})
    moved = {**feats, "prior_home_1": feats["prior_home_1"] + 1.0, "prior_purchase": feats["prior_purchase"] + 1.0}
    for use_priors in (True, False):
        tf.keras.utils.set_random_seed(0)
        model = build_model("mdl", cfg, synth_batch[1], use_priors=use_priors, **SMALL)
        before, after = model.token_states(feats)[0], model.token_states(moved)[0]
        changed = np.abs(after["scenario"].numpy() - before["scenario"].numpy()).max(axis=(0, 2)) > 0
        changed_tasks = np.abs(after["task"].numpy() - before["task"].numpy()).max(axis=(0, 2)) > 0
        if use_priors:  # tokens: home, feed, search, global; tasks: click, purchase
            assert changed.tolist() == [True, False, False, True] and changed_tasks.tolist() == [False, True]
        else:
            assert not changed.any() and not changed_tasks.any()
        # Every model reads the priors as ordinary numeric features of their token group.
        assert np.abs(after["feature"].numpy() - before["feature"].numpy()).max() > 0
    # An onboarded token would have no priors: onboarding refuses the model and the config, naming why.
    from mdl_tf.models.onboarded import check_onboardable

    with pytest.raises(ValueError, match="no priors can be onboarded.*'priors': 'declared"):
        check_onboardable(build_model("mdl", cfg, synth_batch[1], **SMALL))
    with pytest.raises(cfgmod.ConfigError, match=r"cannot onboard scenario 'live'.*prior_for: prior_home_0, "):
        cfgmod.with_scenario(cfg, "live")
    with pytest.raises(cfgmod.ConfigError, match=r"cannot onboard task 'share'"):
        cfgmod.with_task(cfg, "share", "share")
