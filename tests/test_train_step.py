"""The shared training step: Adagrad's accumulator moves embedding rows at any batch size; OOV dropout trains the
OOV row (MDL_MOVIELENS_REVIEW §3: with min_frequency 1 it never occurred in training)."""
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf.data.transform import OOV_ID
from mdl_tf.models import build_model


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
