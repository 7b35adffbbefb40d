"""The shared training step: Adagrad's accumulator moves embedding rows at any batch size; OOV dropout trains the
OOV row (MDL_MOVIELENS_REVIEW §3: with min_frequency 1 it never occurred in training)."""
import re

import numpy as np
import pytest
import tensorflow as tf

from mdl_tf.data.transform import OOV_ID
from mdl_tf.models import REGISTRY, build_model


def _step(cfg, sizes, batch, **compile_kw):
    tf.keras.utils.set_random_seed(0)
    model = build_model("rankmixer", cfg, sizes, d_model=16, hidden=16)
    model.compile(**compile_kw)
    table = model.embedder.tables["user_id"].embeddings
    before = table.numpy().copy()
    labels = tf.cast(tf.random.stateless_uniform([64, 2], (3, 4)) < 0.4, tf.float32)
    model.train_step((batch, {"labels": labels, "label_mask": tf.ones_like(labels)}))
    return before, table.numpy()


def test_default_accumulator_moves_touched_rows_by_about_the_learning_rate(synth_cfg, synth_batch):
    _, sizes, batch, _ = synth_batch
    users = np.unique(batch["user_id"].numpy())
    before, after = _step(synth_cfg, sizes, batch, sparse_lr=0.05)
    # Adagrad's first step is lr * g / sqrt(acc + g^2): ≈ lr for every coordinate once acc << g^2.
    assert np.abs(after[users] - before[users]).max() == pytest.approx(0.05, rel=0.05)
    before, after = _step(synth_cfg, sizes, batch, sparse_lr=0.05, sparse_accumulator=0.1)  # the spec's value
    assert np.abs(after[users] - before[users]).max() < 0.01
    untouched = np.setdiff1d(np.arange(len(before)), users)
    np.testing.assert_array_equal(after[untouched], before[untouched])


def test_oov_rate_trains_the_oov_row(synth_cfg, synth_batch):
    _, sizes, batch, _ = synth_batch
    assert not (batch["user_id"].numpy() == OOV_ID).any()
    before, after = _step(synth_cfg, sizes, batch)
    np.testing.assert_array_equal(after[OOV_ID], before[OOV_ID])  # never seen: never trained
    before, after = _step(synth_cfg, sizes, batch, oov_rate=0.5)
    assert np.abs(after[OOV_ID] - before[OOV_ID]).max() > 0.01
    with pytest.raises(ValueError, match=r"oov_rate must be in \[0, 1\)"):
        _step(synth_cfg, sizes, batch, oov_rate=1.0)


def _path(variable) -> str:
    # Without the model's own name (mdl_model, mdl_model_1, ...); a weight of the model itself has none.
    return variable.name.split("/", 1)[-1]


def _exempt_from_decay(path: str) -> bool:
    """What the docs promise weight decay never touches, restated from the names (not from NOT_DECAYED)."""
    parts = path.split(":")[0].split("/")
    last = parts[-2] if parts[-1].startswith("part_") else parts[-1]
    return (last.endswith("bias") or re.fullmatch(r"b\d+", last) is not None
            or last in {"gamma", "beta", "gamma_k", "beta_k", "specific", "scenario_embedding"})


def _one_step(synth_cfg, synth_batch, name, **compile_args):
    """(model, {path: weight before}, {path: weight after}) of one train step at dense lr 1e-3 from the seed-0
    initialisation, on the shared synthetic batch and fixed labels."""
    _, sizes, batch, _ = synth_batch
    labels = tf.cast(tf.random.stateless_uniform([64, 2], (3, 4)) < 0.4, tf.float32)
    tf.keras.utils.set_random_seed(0)
    model = build_model(name, synth_cfg, sizes, d_model=16, **({} if name == "mdl" else {"hidden": 16}))
    model.compile(dense_lr=1e-3, **compile_args)
    model(batch)
    before = {_path(v): v.numpy().copy() for v in model.trainable_variables}
    model.train_step((batch, {"labels": labels, "label_mask": tf.ones_like(labels)}))
    return model, before, {_path(v): v.numpy() for v in model.trainable_variables}


def test_warmup_scales_the_first_dense_step_and_reaches_dense_lr(synth_cfg, synth_batch):
    """warmup_steps=4: the first step moves every dense weight by a quarter of the un-warmed step (RMSprop's first
    step is linear in the learning rate) and the embedding tables as without it; from step 4 the rate is dense_lr,
    and it never decays. On MMoE, whose dense weights all start random and all get a gradient at the first step
    (MDL's zero head leaves its other dense weights still then, so 0 == 0 / 4 would prove nothing)."""
    moved = {}
    for warmup in (0, 4):
        model, before, after = _one_step(synth_cfg, synth_batch, "mmoe", warmup_steps=warmup)
        moved[warmup] = {path: after[path] - before[path] for path in before}
    dense, sparse = model.variable_groups()
    # Every dense weight moved but the DIN scorer's (this batch's rows are the earliest, with histories of at most
    # one item, where the softmax over the history ignores the scores); a quarter of the step within float32
    # round-off of w + delta (|w| < 1: ~1e-7).
    still = [_path(v) for v in dense if np.abs(moved[0][_path(v)]).max() < 1e-4]
    assert all("/att_" in p for p in still) and len(still) <= 4 < len(dense), still
    for v in dense:
        np.testing.assert_allclose(moved[4][_path(v)], moved[0][_path(v)] / 4, rtol=1e-3, atol=2e-7,
                                   err_msg=_path(v))
    for v in sparse:
        np.testing.assert_allclose(moved[4][_path(v)], moved[0][_path(v)], atol=1e-9, err_msg=_path(v))
    # Wired to the optimizer's step counter: one step counted, taken at the schedule's step-0 rate (what the
    # optimizer reports as its current rate), and the next one is at step 1's.
    assert int(model.optimizer.iterations) == 1
    assert float(model.optimizer.learning_rate) == pytest.approx(2.5e-4)
    assert float(model.optimizer._learning_rate(model.optimizer.iterations)) == pytest.approx(1e-3 * (1 + 3 / 4) / 4)
    schedule = model.optimizer._learning_rate
    assert [round(float(schedule(step)), 9) for step in (0, 2, 4, 10_000)] == [2.5e-4, 6.25e-4, 1e-3, 1e-3]
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        model.compile(warmup_steps=-1)
    for bad in (2.5, True, "4"):
        with pytest.raises(ValueError, match="warmup_steps must be a whole number of steps"):
            model.compile(warmup_steps=bad)
    with pytest.raises(ValueError, match="learning-rate schedule"):
        model.compile(warmup_steps=10, dense_optimizer=tf.keras.optimizers.SGD())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_weight_decay_shrinks_dense_matrices_by_lr_times_decay_and_nothing_else(synth_cfg, synth_batch, name):
    """Decoupled weight decay: from the same weights and batch, one step with decay differs from one without by
    exactly -dense_lr * weight_decay * w on the dense weight matrices, and not at all on biases, normalisation
    parameters, gates and embedding tables."""
    after = {}
    for decay in (0.0, 0.5):
        model, before, after[decay] = _one_step(synth_cfg, synth_batch, name, weight_decay=decay)
    dense, sparse = model.variable_groups()
    decayed = [_path(v) for v in dense if not _exempt_from_decay(_path(v))]
    kept = [_path(v) for v in dense if _exempt_from_decay(_path(v))] + [_path(v) for v in sparse]
    assert len(decayed) > 3 and any("bias" in n for n in kept), (decayed, kept)
    for path in decayed:
        np.testing.assert_allclose(after[0.5][path] - after[0.0][path], -1e-3 * 0.5 * before[path], atol=1e-7,
                                   err_msg=path)
    for path in kept:
        np.testing.assert_array_equal(after[0.5][path], after[0.0][path], err_msg=path)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        model.compile(weight_decay=-1e-4)
    with pytest.raises(ValueError, match="set the decay on that optimizer"):
        model.compile(weight_decay=0.1, dense_optimizer=tf.keras.optimizers.SGD())
