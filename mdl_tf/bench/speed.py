"""`mdl-tf bench speed`: training throughput of MDL against the machine's own fp32 matmul rate, latency, peak
memory, MDL against MMoE at the same dense parameters, and how cost grows with d, L, N_f and N_t.

FLOPs are analytic (MDL_SPEC §6): per example and layer, forward = 4k·N_f·d² (feature PFFN) + 2N_d·d² (Q) +
8N_f·d² (K/V, two paths) + 4·N_d·N_f·d (scores and weighted sum) + 4k·N_d·d² (domain PFFNs), plus the tokenizer
projections and domain-token initializers once; training ≈ 3 × forward.
"""
from __future__ import annotations

import copy
import resource
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf.bench.machine import machine_info
from mdl_tf.data import synthetic
from mdl_tf.data.transform import FeatureTransform, fit_stats, labels_and_mask, raw_columns, vocab_sizes
from mdl_tf.models import build_model
from mdl_tf.utils import atomic_write_text, write_json


def matmul_gflops(n: int = 2048, repeats: int = 10, trials: int = 3, dtype=tf.float32) -> float:
    """TensorFlow's own [n,n]x[n,n] matmul rate; the best of `trials` (shared machines are noisy)."""
    a = tf.random.normal([n, n], dtype=dtype)
    b = tf.random.normal([n, n], dtype=dtype)
    f = tf.function(lambda x, y: tf.matmul(x, y))
    f(a, b).numpy()
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            out = f(a, b)
        out.numpy()
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def mdl_forward_flops(model) -> float:
    """Analytic forward FLOPs per example of an MDLModel (multiply-adds counted as 2)."""
    hp = model.hparams
    d, k, L = hp["d_model"], hp["ffn_multiplier"], hp["num_layers"]
    k_dom = hp.get("domain_ffn_multiplier") or k  # the domain tokens' FFN width (tokenizers and blocks)
    n_f = model.feature_tokenizer.num_tokens
    n_s = model.scenario_tokenizer.num_tokens
    n_t = model.cfg.num_tasks
    n_d = n_s + n_t
    per_layer = 4 * k * n_f * d * d + 2 * n_d * d * d + 8 * n_f * d * d + 4 * n_d * n_f * d + 4 * k_dom * n_d * d * d
    per_layer_last = per_layer - 4 * k_dom * n_s * d * d * (0 if hp["last_scenario_ffn"] else 1)
    once = 2 * n_f * model.feature_tokenizer.token_input_width * d
    for tok in (model.scenario_tokenizer, model.task_tokenizer):
        d_in = tok.ffn.inner.kernel.shape[1]
        once += 2 * tok.num_tokens * (d_in * k_dom * d + k_dom * d * d)
    once += 2 * n_t * d
    return float(per_layer * (L - 1) + per_layer_last + once)


def _batch(batch_size: int, seed: int = 0, cfg=None):
    cfg = cfg or synthetic.feature_config()
    frame = synthetic.generate(rows=max(5000, batch_size * 2), seed=seed).frame
    frame = frame[frame.split == "train"].iloc[:batch_size]
    for col in cfg.raw_feature_columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].astype(str)
    stats = fit_stats(frame, cfg)
    transform = FeatureTransform(cfg, stats)
    feats = transform({k: tf.constant(v) for k, v in raw_columns(frame, cfg).items()})
    labels, mask = labels_and_mask(frame, cfg)
    return cfg, vocab_sizes(cfg, stats), feats, {"labels": tf.constant(labels), "label_mask": tf.constant(mask)}


def seconds_per_step(model, feats, targets, steps: int) -> tuple:
    """(mean seconds per training step after two warm-up steps, last loss)."""
    model.train_on_batch(feats, targets)  # trace (+ XLA compile)
    model.train_on_batch(feats, targets)
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_on_batch(feats, targets, return_dict=True)
    return (time.perf_counter() - start) / steps, float(logs["loss"])


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scaled_config(feature_tokens: int | None = None, tasks: int | None = None):
    """The synthetic feature config with its features dealt round-robin into `feature_tokens` token groups and/or
    `tasks` task heads (alternating the click and purchase labels): cost scaling needs N_f and N_t as knobs."""
    raw = copy.deepcopy(synthetic.FEATURES_YAML)
    if feature_tokens:
        if not 1 <= feature_tokens <= len(raw["features"]):
            raise ValueError(f"feature_tokens must be 1..{len(raw['features'])} (one feature per token at most)")
        raw["token_groups"] = [f"g{i}" for i in range(feature_tokens)]
        for j, feature in enumerate(raw["features"]):
            feature["group"] = f"g{j % feature_tokens}"
    if tasks:
        labels = [t["label"] for t in raw["tasks"]]
        raw["tasks"] = [{"name": f"task{i}", "label": labels[i % len(labels)]} for i in range(tasks)]
    return cfgmod.from_dict(raw, "synthetic (scaled)")


SWEEPS = {"d_model": (96, 192, 384), "num_layers": (1, 2, 4), "feature_tokens": (3, 6, 12), "tasks": (2, 4, 8)}
SWEEP_BASE = {"d_model": 192, "num_layers": 2, "feature_tokens": None, "tasks": None}


def scaling_sweep(batch_size: int, steps: int, sweeps: dict = SWEEPS) -> list:
    """One row per (knob, value): training seconds per example and analytic forward FLOPs, others at SWEEP_BASE."""
    rows = []
    for knob, values in sweeps.items():
        for value in values:
            point = {**SWEEP_BASE, knob: value}
            cfg, sizes, feats, targets = _batch(batch_size, cfg=scaled_config(point["feature_tokens"],
                                                                              point["tasks"]))
            model = build_model("mdl", cfg, sizes, d_model=point["d_model"], num_layers=point["num_layers"])
            model.compile()
            step_s, _ = seconds_per_step(model, feats, targets, steps)
            rows.append({"knob": knob, "value": value, "feature_tokens": model.feature_tokenizer.num_tokens,
                         "tasks": cfg.num_tasks, "d_model": point["d_model"], "num_layers": point["num_layers"],
                         "dense_params": model.param_counts()["dense"],
                         "forward_mflops_per_example": round(mdl_forward_flops(model) / 1e6, 3),
                         "train_us_per_example": round(1e6 * step_s / batch_size, 3)})
            tf.keras.backend.clear_session()
    return rows


def plot_scaling(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = list(dict.fromkeys(r["knob"] for r in rows))
    fig, axes = plt.subplots(1, len(knobs), figsize=(3.2 * len(knobs), 3.0))
    for ax, knob in zip(np.atleast_1d(axes), knobs):
        pts = [r for r in rows if r["knob"] == knob]
        ax.loglog([r["value"] for r in pts], [r["train_us_per_example"] for r in pts], "o-", label="measured")
        base = pts[0]
        ax.loglog([r["value"] for r in pts], [base["train_us_per_example"] * r["forward_mflops_per_example"]
                                              / base["forward_mflops_per_example"] for r in pts], "--",
                  label="FLOPs-proportional")
        ax.set_xlabel(knob)
        ax.set_title(knob, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("training µs / example")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def mdl_vs_mmoe(cfg, sizes, feats, targets, batch_size: int, steps: int, d_model: int, num_layers: int) -> dict:
    """Training time per example of MDL and of MMoE sized to MDL's dense-parameter count (±5%)."""
    from mdl_tf.models.sizing import size_to_budget

    mdl = build_model("mdl", cfg, sizes, d_model=d_model, num_layers=num_layers)
    budget = mdl.param_counts()["dense"]
    mdl.compile()
    mdl_s, _ = seconds_per_step(mdl, feats, targets, steps)
    sized = size_to_budget("mmoe", cfg, sizes, budget)
    mmoe = build_model("mmoe", cfg, sizes, **sized["hparams"])
    mmoe.compile()
    mmoe_s, _ = seconds_per_step(mmoe, feats, targets, steps)
    return {"dense_params": {"mdl": budget, "mmoe": mmoe.param_counts()["dense"]}, "mmoe_hparams": sized["hparams"],
            "train_us_per_example": {"mdl": round(1e6 * mdl_s / batch_size, 3),
                                     "mmoe": round(1e6 * mmoe_s / batch_size, 3)},
            "mdl_over_mmoe_time_ratio": round(mdl_s / mmoe_s, 3)}


def run_speed_bench(out_dir, batch_size: int = 2048, steps: int = 20, d_model: int = 256, num_layers: int = 2,
                    precision: str = "float32", jit_compile: bool = False, compare: bool = True,
                    scaling: bool = True, scaling_batch_size: int = 512, sweeps: dict = SWEEPS) -> dict:
    cfg, sizes, feats, targets = _batch(batch_size)
    model = build_model("mdl", cfg, sizes, precision=precision, d_model=d_model, num_layers=num_layers)
    model.compile(jit_compile=jit_compile)
    train_s, last_loss = seconds_per_step(model, feats, targets, steps)
    flops_fwd = mdl_forward_flops(model)
    achieved = 3 * flops_fwd * batch_size / train_s / 1e9
    peak = matmul_gflops()

    one = {k: v[:1] for k, v in feats.items()}
    predict = tf.function(lambda f: model.compute_logits(f), jit_compile=jit_compile, autograph=False)
    predict(one)
    lat = []
    for _ in range(200):
        t0 = time.perf_counter()
        predict(one).numpy()
        lat.append((time.perf_counter() - t0) * 1e3)
    big = tf.function(lambda f: model.compute_logits(f), jit_compile=jit_compile, autograph=False)
    big(feats).numpy()
    t0 = time.perf_counter()
    for _ in range(5):
        big(feats).numpy()
    infer_eps = 5 * batch_size / (time.perf_counter() - t0)
    memory = peak_rss_mib()
    command = (f"mdl-tf bench speed --batch-size {batch_size} --steps {steps} --d-model {d_model} "
               f"--layers {num_layers} --precision {precision}" + (" --jit-compile" if jit_compile else "")
               + ("" if compare else " --no-compare") + ("" if scaling else " --no-scaling"))
    result = {
        "machine": machine_info(),
        "command": command,
        "model": {"d_model": d_model, "num_layers": num_layers, "params": model.param_counts(),
                  "forward_mflops_per_example": round(flops_fwd / 1e6, 3)},
        "train": {"batch_size": batch_size, "seconds_per_step": round(train_s, 4),
                  "examples_per_second": round(batch_size / train_s, 1), "achieved_gflops": round(achieved, 2),
                  "final_loss": last_loss},
        "matmul_fp32_gflops": round(peak, 2),
        "fraction_of_matmul_rate": round(achieved / peak, 4),
        "inference": {"batch_size": batch_size, "examples_per_second": round(infer_eps, 1),
                      "batch1_latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
                      "batch1_latency_ms_p99": round(float(np.percentile(lat, 99)), 3)},
        "peak_rss_mib": round(memory, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if compare and precision == "float32" and not jit_compile:
        result["mdl_vs_mmoe"] = mdl_vs_mmoe(cfg, sizes, feats, targets, batch_size, steps, d_model, num_layers)
    if scaling:
        rows = scaling_sweep(scaling_batch_size, max(3, steps // 4), sweeps)
        result["scaling"] = {"batch_size": scaling_batch_size, "base": SWEEP_BASE, "rows": rows}
        atomic_write_text(out / "scaling.md", scaling_markdown(rows, command))
        plot_scaling(rows, out / "scaling.png")
    write_json(out / f"speed_{precision}{'_xla' if jit_compile else ''}.json", result)
    return result


def scaling_markdown(rows: list, command: str) -> str:
    lines = [f"`{command}` (others at {SWEEP_BASE}; None = the config's own)", "",
             "| knob | value | N_f | N_t | d | L | dense params | fwd MFLOP/ex | train µs/ex |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['knob']} | {r['value']} | {r['feature_tokens']} | {r['tasks']} | {r['d_model']} | "
                     f"{r['num_layers']} | {r['dense_params']:,} | {r['forward_mflops_per_example']} | "
                     f"{r['train_us_per_example']} |")
    return "\n".join(lines) + "\n"
