"""End-to-end training: the CLI, metrics.json, SavedModel round trip and learning on data with a known signal."""
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from mdl_tf.cli import main
from mdl_tf.data import synthetic
from mdl_tf.data.io import read_split
from mdl_tf.data.transform import raw_columns
from mdl_tf.serving.examples import rows_to_examples
from mdl_tf.training.trainer import TrainConfig, predict_frame, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`mdl-tf data synth` + `mdl-tf train` through the CLI on 12,000 rows; what `train` printed is in
    out/../stdout.txt."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("train")
    data, out = root / "data", root / "out"
    assert main(["data", "synth", "--out", str(data), "--rows", "12000", "--seed", "2"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "3", "--batch-size", "256",
                     "--d-model", "32", "--hparam", "ffn_multiplier=2"]) == 0
    (root / "stdout.txt").write_text(printed.getvalue())
    return data, out


def test_train_prints_each_stage_after_fit_with_its_seconds(trained):
    data, out = trained
    rows = {s: json.loads((data / "dataset.json").read_text())["rows"][s] for s in ("eval", "test")}
    steps = json.loads((out / "metrics.json").read_text())["train_steps"]
    stages = [line for line in (out.parent / "stdout.txt").read_text().splitlines() if line.endswith(" s)")]
    assert [re.sub(r" \(\d+\.\d s\)$", "", line) for line in stages] == [
        f"trained {steps:,} steps", f"evaluated {rows['eval']:,} eval rows and the diagnostics",
        f"evaluated {rows['test']:,} test rows", f"exported {out / 'saved_model'}"]  # no strategy: nothing to copy


def test_metrics_json_has_the_documented_shape(trained):
    _, out = trained
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "mdl"
    assert set(m["params"]) == {"dense", "embedding"} and m["params"]["dense"] > 0 and m["params"]["embedding"] > 0
    for cell in [m["overall"], *m["per_scenario"].values()]:
        for task in ("click", "purchase"):
            assert set(cell[task]) == {"auc", "logloss", "count", "positive_rate"}
    assert set(m["per_scenario"]) >= set(synthetic.SCENARIOS)
    assert set(m["gauc"]) == {"click", "purchase"}
    assert m["overall"]["click"]["count"] == 1200
    curves = m["diagnostics"]["learning_curves"]  # one point per epoch run, train and eval
    assert len(curves["train"]["loss"]) == len(curves["eval"]["auc_click"]) == m["epochs_run"] == 3
    assert m["diagnostics"]["gradient_norms"]["task_heads"] > 0  # trained: gradient reaches past the zero head
    assert m["diagnostics"]["gradient_norms"]["embedder"] > 0
    assert [n["layer"] for n in m["diagnostics"]["token_norms"]] == [0, 1, 2]


def test_training_warns_when_no_gradient_reaches_a_component(synth_dir, tmp_path, monkeypatch, caplog):
    from mdl_tf.training import diagnostics

    real = diagnostics.gradient_norms
    monkeypatch.setattr(diagnostics, "gradient_norms", lambda *a: {**real(*a), "task_heads": 0.0})
    train(synth_dir, synth_dir, tmp_path / "m", TrainConfig(epochs=1, batch_size=256, max_steps_per_epoch=2,
                                                          verbose=0, export=False), {"d_model": 16})
    warnings = [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING" and r.name == "mdl_tf.training.trainer"]
    assert len(warnings) == 1 and "no gradient reaches component task_heads" in warnings[0], warnings


def test_mdl_beats_chance_on_every_scenario_task_cell(trained):
    _, out = trained
    m = json.loads((out / "metrics.json").read_text())
    # The feed cells hold ~240 eval rows (~25 purchases): an AUC there has a seed-to-seed spread of ±0.05, so each
    # cell must be clearly above chance and the cells together well above it (3 seeds: mean 0.68-0.71).
    cells = [m["per_scenario"][s][t]["auc"] for s in synthetic.SCENARIOS for t in ("click", "purchase")]
    assert min(cells) > 0.55 and np.mean(cells) > 0.65, cells


def test_saved_model_round_trip_gives_the_same_predictions(trained):
    data, out = trained
    cfg = synthetic.feature_config()
    rows = read_split(data, "test", cfg).iloc[:50]
    loaded = tf.saved_model.load(str(out / "saved_model"))
    from_examples = loaded.signatures["serving_default"](examples=tf.constant(rows_to_examples(rows, cfg)))
    raw = {k: tf.constant(v) for k, v in raw_columns(rows, cfg).items()}
    from_raw = loaded.signatures["serving_raw"](**raw)
    # The same rows through the in-memory transform + the module's model: rebuild from the saved transform stats.
    from mdl_tf.data.transform import FeatureTransform, load_stats

    transform = FeatureTransform(cfg, load_stats(out))
    transformed = loaded.signatures["transform_features"](examples=tf.constant(rows_to_examples(rows, cfg)))
    direct = transform(raw)
    for key in direct:  # ids exactly; numerics to float32 rounding (CSV text vs tf.Example float)
        np.testing.assert_allclose(direct[key].numpy(), transformed[key].numpy(), rtol=1e-6, atol=1e-6)
    for task in cfg.task_names:
        np.testing.assert_allclose(from_examples[f"{task}_probability"].numpy(),
                                   from_raw[f"{task}_probability"].numpy(), atol=1e-6)
    assert ((from_examples["click_probability"].numpy() > 0) & (from_examples["click_probability"].numpy() < 1)).all()


def test_trainer_predictions_equal_the_exported_model(trained):
    """Retrain-free check: the model rebuilt from the SavedModel's weights (`rebuild_model`, what onboarding and the
    attention maps use) through the trainer's predict path equals the served signature."""
    from mdl_tf.data.transform import FeatureTransform, load_stats
    from mdl_tf.export import read_metadata, rebuild_model
    from mdl_tf.models import build_model

    data, out = trained
    cfg = synthetic.feature_config()
    rows = read_split(data, "eval", cfg).iloc[:40]
    loaded = tf.saved_model.load(str(out / "saved_model"))
    meta = read_metadata(out / "saved_model")
    model, _ = rebuild_model(out / "saved_model", meta,
                             lambda hp: build_model(meta["model"], cfg, meta["vocab_sizes"], **hp))
    transform = FeatureTransform(cfg, load_stats(out))

    class _Wrapped:  # predict_frame expects a Keras-like .predict
        def predict(self, ds, verbose=0):
            outs = [model(x, training=False) for x in ds]
            return {t: np.concatenate([o[t].numpy() for o in outs]) for t in cfg.task_names}

    probs = predict_frame(_Wrapped(), rows, cfg, transform)
    served = loaded.signatures["serving_default"](examples=tf.constant(rows_to_examples(rows, cfg)))
    np.testing.assert_allclose(probs[:, 0], served["click_probability"].numpy(), atol=1e-6)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--schema", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "features.yaml" in capsys.readouterr().err


def test_cli_names_a_hyperparameter_the_model_refuses(synth_dir, tmp_path, capsys, monkeypatch):
    """A refused hyperparameter is the user's mistake: one line naming the flag, the value and the reason (an unknown
    name is refused before anything is built, with the closest known one); a bug in a constructor is not, and keeps
    its traceback."""
    from mdl_tf.models import REGISTRY

    def error_of(*flags):
        assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "o"), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    assert error_of("--hparam", "attn_headz=2").startswith(
        "mdl-tf: error: --hparam attn_headz=2: mdl has no hyperparameter attn_headz (did you mean attn_heads?); its "
        "hyperparameters are ")
    # A name is refused before the data is read (here there is none).
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--hparam", "rnak=2",
                 "--model", "dffm"]) == 2
    assert "--hparam rnak=2: dffm has no hyperparameter rnak (did you mean rank?)" in capsys.readouterr().err
    assert error_of("--hparam", "d_model=18") == (
        "mdl-tf: error: --hparam d_model=18: d_model=18 must be divisible by N_f=4 (the feature tokens of "
        "'synthetic'): try 16 or 20; TokenMixing splits every token into N_f slices")
    assert error_of("--d-model", "20", "--hparam", "attn_heads=8") == (  # both checked at once, with widths that work
        "mdl-tf: error: --d-model 20: d_model=20 must be divisible by N_f=4 (the feature tokens of 'synthetic') and "
        "by attn_heads=8: try 16 or 24; TokenMixing splits every token into N_f slices")
    assert error_of("--d-model", "18").startswith("mdl-tf: error: --d-model 18: d_model=18 must be divisible")
    assert error_of("--model", "rankmixer", "--hparam", "hidden=-3") == (
        "mdl-tf: error: --hparam hidden=-3: hidden must be a whole number >= 1, got -3")
    assert error_of("--model", "mmoe", "--hparam", "num_experts=0").endswith("num_experts must be a whole number "
                                                                               ">= 1, got 0")
    assert error_of("--hparam", "d_model=4", "--hparam", "attn_heads=1", "--hparam",
                    "scenario_interaction=\"mixer\"").startswith(
        "mdl-tf: error: --hparam d_model=4: 8 tokens cannot be mixed at d_model=4")
    assert error_of("--hparam", 'tokenizer="x"').startswith(
        "mdl-tf: error: --hparam tokenizer=\"x\": tokenizer must be one of ")
    assert error_of("--hparam", 'important_features={"task": ["nope"]}').startswith(
        "mdl-tf: error: --hparam important_features={\"task\": [\"nope\"]}: important_features['task']: ['nope'] "
        "not in feature config")
    assert error_of("--ablation", "no_task_tokens", "--hparam", "use_scenario_tokens=false").startswith(
        "mdl-tf: error: --ablation no_task_tokens: MDL without scenario tokens and without task tokens")
    assert error_of("--hparam", 'loss_norm="x"').startswith(
        "mdl-tf: error: --hparam loss_norm=\"x\": loss_norm must be one of ")
    assert error_of("--hparam", "task_weights=[1, -1]") == (
        "mdl-tf: error: --hparam task_weights=[1, -1]: task_weights must be finite numbers >= 0, got -1")
    assert error_of("--hparam", "dropout=1.5") == (
        "mdl-tf: error: --hparam dropout=1.5: dropout must be in [0, 1), got 1.5")
    assert not (tmp_path / "o" / "saved_model").exists()

    def broken(*args, **kwargs):
        raise TypeError("a bug in a constructor")

    monkeypatch.setattr(REGISTRY["mmoe"], "__init__", broken)
    with pytest.raises(TypeError, match="a bug in a constructor"):
        main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "p"), "--model", "mmoe", "--hparam",
              "hidden=8"])


@pytest.mark.slow
def test_scenario_tokens_help_the_minority_scenarios(tmp_path):
    """MDL_SPEC §11 / issue 3 invariant 6: at a fixed seed, MDL beats the same model without scenario tokens on
    the minority scenarios (feed 20%, search 10% of traffic), averaged over their scenario x task cells.

    Only at this seed: over the generator's seeds 0, 1, 2 the margin measured +0.008, +0.016 and -0.012 (and with one
    block instead of two +0.003, -0.014, -0.002), so the invariant is a property of this dataset, not a guarantee."""
    from mdl_tf.training.trainer import TrainConfig, train

    from tests.conftest import without_test_split

    synthetic.write(tmp_path / "data", rows=50_000, seed=0)
    without_test_split(tmp_path / "data")  # the comparison reads eval metrics only; no SavedModel is needed either
    results = {}
    for name, flags in (("mdl", {}), ("no_scenario_tokens", {"use_scenario_tokens": False})):
        m = train(tmp_path / "data", tmp_path / "data", tmp_path / name, TrainConfig(epochs=3, batch_size=256,
                  verbose=0, export=False), dict(d_model=32, ffn_multiplier=2, **flags))
        results[name] = np.mean([m["per_scenario"][s][t]["auc"] for s in ("feed", "search")
                                 for t in ("click", "purchase")])
    assert results["mdl"] > results["no_scenario_tokens"] + 0.005, results


def test_an_auc_over_one_class_is_undefined_not_zero():
    from mdl_tf.training.metrics import DefinedAUC

    probs = tf.constant([0.1, 0.4, 0.35, 0.8])
    auc, keras = DefinedAUC(num_thresholds=500), tf.keras.metrics.AUC(num_thresholds=500)
    for m in (auc, keras):
        m.update_state(tf.constant([0.0, 0.0, 1.0, 1.0]), probs)
    assert float(auc.result()) == pytest.approx(float(keras.result())) == pytest.approx(0.75, abs=0.01)
    for labels in ([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]):
        auc.reset_state()
        keras.reset_state()
        auc.update_state(tf.constant(labels), probs)
        keras.update_state(tf.constant(labels), probs)
        assert np.isnan(float(auc.result())) and float(keras.result()) == 0.0  # Keras' 0.0 read as a bad model
    auc.reset_state()  # weights: rows of one class that carry no weight do not count
    auc.update_state(tf.constant([0.0, 1.0, 1.0, 1.0]), probs, sample_weight=tf.constant([0.0, 1.0, 1.0, 1.0]))
    assert np.isnan(float(auc.result()))


def test_epoch_choice_skips_an_undefined_auc_and_says_so(caplog):
    from mdl_tf.training.trainer import BestEpoch

    class Weights:
        def __init__(self):
            self.w = [tf.Variable(0.0)]

        def model_weights(self):
            return self.w

    best = BestEpoch(["click", "purchase"], patience=0)
    best.set_model(Weights())
    for epoch, (click, weight) in enumerate([(0.70, 1.0), (0.72, 2.0), (0.71, 3.0)]):
        best.model.w[0].assign(weight)
        best.on_epoch_end(epoch, {"val_auc_click": click, "val_auc_purchase": float("nan")})
    with caplog.at_level("WARNING"):
        best.on_train_end()
    assert best.best_epoch == 1 and best.best == pytest.approx(0.72) and float(best.model.w[0]) == 2.0
    assert "task(s) ['purchase'] hold one class only" in caplog.text and "other tasks' mean AUC" in caplog.text

    none = BestEpoch(["purchase"], patience=0)
    none.set_model(Weights())
    none.on_epoch_end(0, {"val_auc_purchase": float("nan")})
    caplog.clear()
    with caplog.at_level("WARNING"):
        none.on_train_end()
    assert none.best_epoch == -1 and "no epoch could be chosen and the last one is kept" in caplog.text

    patient = BestEpoch(["click"], patience=1)  # an epoch without a defined AUC is not a bad epoch
    patient.set_model(Weights())
    patient.model.stop_training = False
    patient.on_epoch_end(0, {"val_auc_click": 0.70})
    patient.on_epoch_end(1, {"val_auc_click": float("nan")})
    assert not patient.model.stop_training
    patient.on_epoch_end(2, {"val_auc_click": 0.69})
    assert patient.model.stop_training


def test_the_trainer_epoch_line_shows_an_undefined_auc_as_such(capsys):
    from tfx_pipeline.models.model import EpochLine

    EpochLine(2).on_epoch_end(0, {"loss": 0.5, "val_auc_click": 0.71234, "val_auc_purchase": float("nan")})
    assert capsys.readouterr().out.startswith("          Trainer epoch 1/2: loss 0.5000, eval AUC click 0.7123, "
                                              "purchase n/a (one class) (")
