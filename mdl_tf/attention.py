"""MDL attention analysis (the paper's attention figures on your data): how much each scenario token and each task
token attends to each feature token, per layer, and how that differs between scenarios.

Works from any exported MDL SavedModel (`mdl-tf train`'s `saved_model/` or a version the pipeline pushed): the model
is rebuilt from `assets.extra/mdl_metadata.json` (feature config, hparams, vocabulary sizes), its weights restored
from the SavedModel's checkpoint, and rows are transformed by the SavedModel's own `transform_features` signature.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf.data.transform import SCENARIO_INDEX
from mdl_tf.serving.examples import rows_to_examples

METADATA = Path("assets.extra") / "mdl_metadata.json"


def load_mdl(saved_model_dir):
    """(model, feature config, loaded SavedModel) of an exported MDL model."""
    from mdl_tf.export import rebuild_model
    from mdl_tf.models import build_model

    path = Path(saved_model_dir)
    meta = json.loads((path / METADATA).read_text())
    if meta.get("model") != "mdl":
        raise ValueError(f"{path}: attention maps need an MDL model, this one is {meta.get('model')!r}")
    if "vocab_sizes" not in meta:
        raise ValueError(f"{path}: mdl_metadata.json has no vocab_sizes (exported by an older mdl-tf); retrain")
    cfg = cfgmod.from_dict(meta["feature_config"], f"{path / METADATA}")
    model, _ = rebuild_model(path, meta, lambda hp: build_model("mdl", cfg, meta["vocab_sizes"], **hp))
    return model, cfg, tf.saved_model.load(str(path))


def transform_rows(loaded, frame, cfg) -> dict:
    """Raw rows (a DataFrame of raw columns) -> the model's transformed features, via the SavedModel's own signature."""
    out = loaded.signatures["transform_features"](examples=tf.constant(rows_to_examples(frame, cfg)))
    return dict(out)


def feature_token_labels(model) -> list:
    tok = model.feature_tokenizer
    if tok.mode == "group":
        return list(model.cfg.token_groups)
    if tok.mode == "feature":
        return [names[0] for names in tok.groups]
    return [f"slice {i}" for i in range(tok.num_tokens)]


def domain_token_labels(model) -> dict:
    scen = list(model.cfg.scenario_names) + (["global"] if model.hparams["use_global_token"] else [])
    return {"scenario": scen, "task": list(model.cfg.task_names)}


def mean_attention(model, features, rows=None) -> list:
    """Per layer {"scenario": [N_s(+1), N_f], "task": [N_t, N_f]}: attention weights averaged over heads and over the
    selected rows (a boolean mask over the batch; all rows by default)."""
    maps = model.attention_maps(features)
    out = []
    for layer in maps:
        averaged = {}
        for kind, weights in layer.items():
            w = tf.cast(weights, tf.float32).numpy()          # [B, heads, tokens, N_f]
            if rows is not None:
                w = w[np.asarray(rows, dtype=bool)]
            averaged[kind] = w.mean(axis=(0, 1)) if len(w) else np.full(w.shape[2:], np.nan)
        out.append(averaged)
    return out


def attention_by_scenario(model, features) -> dict:
    """{scenario name: mean_attention over the rows whose primary scenario it is}."""
    index = np.asarray(features[SCENARIO_INDEX])
    return {name: mean_attention(model, features, index == i) for i, name in enumerate(model.cfg.scenario_names)
            if (index == i).any()}


def plot_attention(model, per_layer: list, title: str = ""):
    """One heatmap per layer and token kind (rows: scenario or task tokens, columns: feature-token groups)."""
    import matplotlib.pyplot as plt

    kinds = [k for k in ("scenario", "task") if k in per_layer[0]]
    fig, axes = plt.subplots(len(kinds), len(per_layer), figsize=(3.8 * len(per_layer), 2.2 * len(kinds) + 1),
                             squeeze=False)
    cols, rows = feature_token_labels(model), domain_token_labels(model)
    for j, layer in enumerate(per_layer):
        for i, kind in enumerate(kinds):
            ax = axes[i][j]
            image = ax.imshow(layer[kind], cmap="viridis", aspect="auto")
            for (r, c), v in np.ndenumerate(layer[kind]):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white", fontsize=7)
            ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
            ax.set_yticks(range(len(rows[kind])), rows[kind])
            ax.set_title(f"layer {j + 1}: {kind} tokens")
            fig.colorbar(image, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_scenario_difference(model, by_scenario: dict, a: str, b: str, kind: str = "task"):
    """Heatmaps of mean attention in scenario `a` minus scenario `b`, per layer (red: more attention in `a`)."""
    import matplotlib.pyplot as plt

    diff = [la[kind] - lb[kind] for la, lb in zip(by_scenario[a], by_scenario[b])]
    bound = max(float(np.nanmax(np.abs(d))) for d in diff) or 1e-6
    fig, axes = plt.subplots(1, len(diff), figsize=(3.8 * len(diff), 2.6), squeeze=False)
    cols, rows = feature_token_labels(model), domain_token_labels(model)[kind]
    for j, d in enumerate(diff):
        ax = axes[0][j]
        image = ax.imshow(d, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(f"layer {j + 1}: {kind} tokens, {a} − {b}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
