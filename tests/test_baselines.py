"""The baselines and the MDL ablations: one interface, one parameter budget, learning on real and synthetic data."""
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf.data import movielens, synthetic
from mdl_tf.layers.block import mixer_token_count
from mdl_tf.models import REGISTRY, build_model
from mdl_tf.models.base import dummy_features
from mdl_tf.models.mdl import ABLATIONS
from mdl_tf.models.sizing import BudgetError, dense_params, size_to_budget
from mdl_tf.training.trainer import TrainConfig, train
from tests.conftest import without_test_split

BASELINES = [m for m in REGISTRY if m != "mdl"]


def _sizes(cfg, n=60):
    return {f.name: n for f in cfg.features if f.is_id_feature}


def _components(model) -> dict:
    """{component path: shape} with the model's own name and block indices stripped, e.g.
    'mdl_block_*/task_attention/query/kernel:0'."""
    out = {}
    for v in model.trainable_variables:
        path = re.sub(r"mdl_block_\d+", "mdl_block_*", v.name.split("/", 1)[1])
        # DAA_s's K/V projection (and, with domain_prenorm, its K/V LayerNorm) is built where the block first calls
        # `key_value()`, so Keras names it mdl_block_*/key_value (kv_norm); it belongs to the scenario attention.
        for part in ("key_value", "kv_norm"):
            path = path.replace(f"mdl_block_*/{part}/", f"mdl_block_*/scenario_attention/{part}/")
        out.setdefault(path, []).append(tuple(v.shape))
    return out


def _prefixes(paths) -> set:
    return {"/".join(p.split("/")[:2]) if p.startswith("mdl_block_*") else p.split("/")[0] for p in paths}


EXPECTED_ABLATIONS = {
    # ablation: (components removed, components added, components whose shapes change)
    "no_task_tokens": ({"task_tokenizer", "mdl_block_*/task_attention", "mdl_block_*/task_ffn", "task_heads"},
                       {"task_towers"}, set()),
    "no_scenario_tokens": ({"scenario_tokenizer", "mdl_block_*/scenario_attention", "mdl_block_*/scenario_ffn"},
                           {"scenario_towers"}, set()),
    "no_global_token": (set(), set(), {"scenario_tokenizer", "mdl_block_*/scenario_attention",
                                       "mdl_block_*/scenario_ffn"}),
    "no_scenario_attention": ({"mdl_block_*/scenario_attention"}, set(), {"mdl_block_*/feature_block"}),
    "no_task_attention": ({"mdl_block_*/task_attention"}, {"mdl_block_*/padding_tokens:0"},
                          {"mdl_block_*/feature_block"}),
}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_each_ablation_removes_exactly_its_component(synth_cfg, ablation):
    full = _components(build_model("mdl", synth_cfg, _sizes(synth_cfg), d_model=32))
    ablated_model = build_model("mdl", synth_cfg, _sizes(synth_cfg), d_model=32, **ABLATIONS[ablation])
    ablated = _components(ablated_model)
    removed, added, changed = EXPECTED_ABLATIONS[ablation]
    if ablation in ("no_scenario_attention", "no_task_attention"):
        # Padding tokens exist only when the joint token count does not divide d (4 + 4 does, 4 + 2 does not).
        joint = 4 + (4 if ablation == "no_scenario_attention" else 2)
        assert (mixer_token_count(joint, 32) > joint) == bool(added)
    assert _prefixes(set(full) - set(ablated)) == removed
    assert _prefixes(set(ablated) - set(full)) == added
    assert _prefixes(p for p in set(full) & set(ablated) if full[p] != ablated[p]) == changed
    probs = ablated_model(dummy_features(synth_cfg, 3))
    assert set(probs) == {"click", "purchase"} and probs["click"].shape == (3,)


def test_ablations_are_only_for_mdl(capsys):
    from mdl_tf.cli import main

    assert main(["train", "--data", "x", "--out", "y", "--model", "mmoe", "--ablation", "no_task_tokens"]) == 2
    assert "needs --model mdl" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_budget_matching_lands_within_5_percent(synth_cfg, name):
    target = 150_000
    sized = size_to_budget(name, synth_cfg, _sizes(synth_cfg), target)
    assert abs(sized["dense_params"] - target) <= 0.05 * target
    model = build_model(name, synth_cfg, _sizes(synth_cfg), **sized["hparams"])
    assert model.param_counts()["dense"] == sized["dense_params"]


def test_sizing_predicts_counts_only_where_they_are_exactly_quadratic():
    """size_to_budget searches on a quadratic fitted to a few builds; a count with a rounded width in it (STAR's
    aux tower is hidden // 2 wide) must be refused, so the search falls back to real builds and picks what it did."""
    from mdl_tf.models.sizing import _quadratic

    samples = [(8, 4), (20, 4), (36, 4), (8, 9), (8, 17), (20, 9)]
    checks = [(56, 12), (36, 23)]  # widths the samples do not have, as size_to_budget's

    def quadratic(d, h):
        return 3 + 5 * d + 7 * h + 2 * d * d + d * h + 4 * h * h

    poly = _quadratic(quadratic, samples, checks)
    assert poly is not None and poly(1000, 377) == quadratic(1000, 377)
    assert _quadratic(lambda d, h: quadratic(d, h) + h // 2, samples, checks) is None
    assert _quadratic(lambda d: d ** 3, [(4,), (8,), (16,)], [(28,)]) is None


def test_sliced_feature_tokens_set_n_f_and_the_sized_width_divides_by_it(synth_cfg, synth_batch):
    """tokenizer="slice" with feature_tokens=N (RankMixer's T): T_f has N tokens, token j projects slice j of the
    zero-padded concatenation of all embeddings, and the budget search only tries widths divisible by N."""
    sizes = synth_batch[1]
    sized = size_to_budget("mdl", synth_cfg, sizes, 150_000, tokenizer="slice", feature_tokens=8)
    assert sized["hparams"]["d_model"] % 8 == 0
    model = build_model("mdl", synth_cfg, sizes, d_model=16, tokenizer="slice", feature_tokens=8)
    embedded = model.embedder(synth_batch[2])
    tok = model.feature_tokenizer
    assert tok.num_tokens == 8 and tok(embedded).shape == (64, 8, 16)
    flat = tf.concat([embedded[n] for names in tok.groups for n in names], axis=-1).numpy()
    w = tok.token_input_width
    flat = np.pad(flat, [(0, 0), (0, 8 * w - flat.shape[1])])
    kernel = tok.projection.kernel.numpy()  # [N_f, w, d]
    expected = np.einsum("bnw,nwd->bnd", flat.reshape(64, 8, w), kernel) + tok.projection.bias.numpy()
    np.testing.assert_allclose(tok(embedded).numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="feature_tokens=8 needs tokenizer='slice'"):
        build_model("mdl", synth_cfg, sizes, d_model=16, feature_tokens=8)


def test_per_feature_tokens_give_every_feature_its_own_token(synth_cfg, synth_batch):
    """tokenizer="feature": N_f is the schema's feature count and token j projects feature j's embedding alone
    (zero-padded to the widest feature), for MDL and the baselines alike; the budget search steps d by N_f."""
    sizes, embedded_batch = synth_batch[1], synth_batch[2]
    n = len(synth_cfg.features)
    assert n != len(synth_cfg.token_groups)
    target = dense_params("rankmixer", synth_cfg, sizes, d_model=3 * n, tokenizer="feature")
    sized = size_to_budget("rankmixer", synth_cfg, sizes, target, tokenizer="feature")
    assert sized["hparams"]["d_model"] % n == 0 and abs(sized["dense_params"] - target) <= 0.05 * target
    for name in ("mdl", "rankmixer"):
        model = build_model(name, synth_cfg, sizes, d_model=2 * n, tokenizer="feature")
        embedded = model.embedder(embedded_batch)
        tok = model.feature_tokenizer
        assert tok.num_tokens == n and tok.groups == [[f.name] for f in synth_cfg.features]
        w = tok.token_input_width
        flat = np.stack([np.pad(embedded[f.name].numpy(), [(0, 0), (0, w - embedded[f.name].shape[1])])
                         for f in synth_cfg.features], axis=1)
        expected = np.einsum("bnw,nwd->bnd", flat, tok.projection.kernel.numpy()) + tok.projection.bias.numpy()
        np.testing.assert_allclose(tok(embedded).numpy(), expected, rtol=1e-5, atol=1e-5)
        assert model(dummy_features(synth_cfg, 3))["click"].shape == (3,)
    with pytest.raises(ValueError, match="needs tokenizer='slice'"):
        build_model("mdl", synth_cfg, sizes, d_model=2 * n, tokenizer="feature", feature_tokens=4)


def test_an_impossible_budget_names_the_closest_setting(synth_cfg):
    with pytest.raises(BudgetError, match="closest"):
        size_to_budget("mdl", synth_cfg, _sizes(synth_cfg), 500)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_degenerate_single_scenario_single_task_and_bad_input(synth_cfg, name):
    raw = synth_cfg.to_dict()
    raw["scenario"] = {"column": "scenario", "values": ["home"]}
    raw["tasks"] = [{"name": "click", "label": "click"}]
    single = cfgmod.from_dict(raw)
    model = build_model(name, single, _sizes(single), d_model=16)
    model.compile(run_eagerly=True)  # one step: eager runs the same train_step without ~20 s of tracing
    x = dummy_features(single, 8)
    y = {"labels": tf.constant(np.random.default_rng(0).integers(0, 2, (8, 1)), tf.float32),
         "label_mask": tf.ones([8, 1])}
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and set(model(x)) == {"click"}
    missing = {k: v for k, v in dummy_features(synth_cfg, 2).items() if k != "item_id"}
    full = build_model(name, synth_cfg, _sizes(synth_cfg), d_model=16)
    with pytest.raises(KeyError, match="item_id"):
        full(missing)
    with pytest.raises(KeyError, match="item_id"):
        build_model(name, synth_cfg, {k: v for k, v in _sizes(synth_cfg).items() if k != "item_id"}, d_model=16)


# Weights that never get a gradient by construction, kept so that saved states and recorded benchmark runs stay
# valid: the DIN scorer's bias (a softmax over a row's items ignores a constant added to every score; dropping it
# would break warm starts from every saved model with a sequence feature) and the shared gate of PLE's last CGC
# level (nothing reads its shared stream; dropping it re-sizes PLE at the benchmarks' budget).
STRUCTURALLY_UNREAD = (r"/seq_\w+/att_score/bias:0$",
                       rf"/cgc_{REGISTRY['ple'].extra_hparams()['levels'] - 1}/shared_gate/")  # the last level's


@pytest.mark.parametrize("name,ablation,hparams", [(m, None, {}) for m in sorted(REGISTRY)]
                         + [("mdl", a, ABLATIONS[a]) for a in sorted(ABLATIONS)]
                         + [("dffm", "mean pooling", {"seq_encoder": "mean"})])
def test_no_trainable_variable_is_dead_after_one_step(synth_dir, synth_cfg, synth_batch, name, ablation, hparams):
    """After one optimizer step, on a batch holding every scenario and behaviour sequences of several items, the loss
    has a nonzero gradient for every trainable variable (but STRUCTURALLY_UNREAD). A weight that never gets one
    never learns: DFFM's two zero-initialised low-rank factors once froze each other this way (each one's gradient
    is proportional to the other), and RankMixer's and the shared bottom's scenario embedding was never read."""
    from mdl_tf.data.io import read_split
    from mdl_tf.data.transform import raw_columns

    rows = read_split(synth_dir, "train", synth_cfg).iloc[-64:]  # the latest rows: their users have histories
    feats = synth_batch[0]({k: tf.constant(v) for k, v in raw_columns(rows, synth_cfg).items()})
    assert (feats["scenario_mask"].numpy().sum(0) > 0).all()
    assert ((feats["hist_items"].numpy() != 0).sum(1) >= 2).sum() >= 32  # DIN's scores only matter from 2 items
    tf.keras.utils.set_random_seed(0)
    model = build_model(name, synth_cfg, synth_batch[1], d_model=16, **hparams)
    model.compile(run_eagerly=True)
    labels = tf.cast(tf.random.stateless_uniform([64, synth_cfg.num_tasks], (1, 2)) < 0.5, tf.float32)
    targets = {"labels": labels, "label_mask": tf.ones_like(labels)}
    model.train_on_batch(feats, targets)
    with tf.GradientTape() as tape:
        loss = model._loss(labels, model.compute_logits(feats), targets["label_mask"])
    grads = tape.gradient(loss, model.trainable_variables)
    largest = [(v.name, 0.0 if g is None else float(np.abs(tf.convert_to_tensor(g).numpy()).max()))
               for v, g in zip(model.trainable_variables, grads)]
    # 1e-8: the smallest live gradient here is ~1e-6 (the DIN scorer of MDL behind its one-step-old zero head); a
    # dead weight reads 0, or fp32 round-off below 1e-9 (the DIN scorer's bias measured so).
    dead = [v for v, g in largest if g < 1e-8 and not any(re.search(p, v) for p in STRUCTURALLY_UNREAD)]
    assert not dead, dead
    if name == "dffm":  # its sequence query shift exists only where a DIN pooling reads it
        assert any("sequence_query_shift" in v for v, _ in largest) == (hparams.get("seq_encoder", "din") == "din")


@pytest.fixture(scope="module")
def synth_30k(tmp_path_factory):
    # 30k rows: the minority scenario's eval split then has ~20 purchases, enough for a stable AUC.
    out = tmp_path_factory.mktemp("synth30k")
    synthetic.write(out, rows=30000, seed=5)
    return without_test_split(out)  # the learning checks read eval metrics only


@pytest.fixture(scope="module")
def ml_data(tmp_path_factory):
    """MovieLens-100K with every 4th training rating (20,000, spread over the whole training period) and the full
    eval split (10,000): one epoch at batch 256 is 79 steps. With all 80,000 ratings every model's weakest cell
    (under25/click) scored 0.63-0.65, far above chance; a quarter of the steps still leaves a wide margin, and every
    cell's AUC is still measured on all of its eval rows. No test split: the checks read eval metrics only."""
    from mdl_tf.data.io import write_dataset

    out = tmp_path_factory.mktemp("ml_baselines")
    splits = movielens.time_split(movielens.build_frame(movielens.fetch()))
    write_dataset(out, {"train": splits["train"].iloc[::4], "eval": splits["eval"]}, movielens.feature_config(),
                  provenance={"source": "tests: MovieLens-100K, every 4th training rating"})
    return out


def _serving_outputs(saved_model_dir, load: bool) -> set:
    """The serving signature's output names: from a real `tf.saved_model.load` (`load`), or read from
    saved_model.pb's signature_def without restoring the graph (the same names, a fraction of the time)."""
    if load:
        return set(tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"].structured_outputs)
    from tensorflow.python.saved_model import loader_impl

    meta = loader_impl.parse_saved_model(str(saved_model_dir)).meta_graphs[0]
    return set(meta.signature_def["serving_default"].outputs)


def _train_and_check(data, out, name, epochs, batch_size, tasks, scenarios, load: bool = True):
    # One layer (block) for every model: learning each cell needs no depth (the smallest cell AUC measured so was
    # 0.595 on synthetic, 0.605 on MovieLens), and a layer fewer is a quarter less tracing of every graph.
    metrics = train(data, data, out, TrainConfig(model=name, epochs=epochs, batch_size=batch_size, verbose=0),
                    {"d_model": 16, "num_layers": 1} if name == "mdl" else {"d_model": 16, "hidden": 32,
                                                                           "num_layers": 1})
    for scope in [metrics["overall"], *[metrics["per_scenario"][s] for s in scenarios]]:
        for task in tasks:
            assert scope[task]["auc"] > 0.5, (name, scope, task)
    assert _serving_outputs(out / "saved_model", load) == {f"{t}_probability" for t in tasks}
    assert json.loads((out / "metrics.json").read_text())["params"]["dense"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_learns_every_cell_on_synthetic_data(synth_30k, tmp_path, name):
    _train_and_check(synth_30k, tmp_path / name, name, 2, 128, ["click", "purchase"], synthetic.SCENARIOS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_learns_every_cell_on_movielens(ml_data, tmp_path, name):
    # Every model's SavedModel is restored for real in the synthetic test above; here its signature is read from
    # saved_model.pb (the output names are what differ between the datasets).
    _train_and_check(ml_data, tmp_path / name, name, 1, 256, ["click", "like"], movielens.AGE_GROUPS, load=False)
