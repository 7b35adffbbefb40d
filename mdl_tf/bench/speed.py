"""`mdl-tf bench speed`: training throughput of MDL against the machine's own fp32 matmul rate, and latency.

FLOPs are analytic (MDL_SPEC §6): per example and layer, forward = 4k·N_f·d² (feature PFFN) + 2N_d·d² (Q) +
8N_f·d² (K/V, two paths) + 4·N_d·N_f·d (scores and weighted sum) + 4k·N_d·d² (domain PFFNs), plus the tokenizer
projections and domain-token initializers once; training ≈ 3 × forward.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mdl_tf.bench.machine import machine_info
from mdl_tf.data import synthetic
from mdl_tf.data.transform import FeatureTransform, fit_stats, labels_and_mask, raw_columns, vocab_sizes
from mdl_tf.models import build_model
from mdl_tf.utils import write_json


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
    n_f = model.feature_tokenizer.num_tokens
    n_s = model.scenario_tokenizer.num_tokens
    n_t = model.cfg.num_tasks
    n_d = n_s + n_t
    per_layer = 4 * k * n_f * d * d + 2 * n_d * d * d + 8 * n_f * d * d + 4 * n_d * n_f * d + 4 * k * n_d * d * d
    per_layer_last = per_layer - 4 * k * n_s * d * d * (0 if hp["last_scenario_ffn"] else 1)
    once = 2 * n_f * model.feature_tokenizer.token_input_width * d
    for tok in (model.scenario_tokenizer, model.task_tokenizer):
        d_in = tok.ffn.inner.kernel.shape[1]
        once += 2 * tok.num_tokens * (d_in * k * d + k * d * d)
    once += 2 * n_t * d
    return float(per_layer * (L - 1) + per_layer_last + once)


def _batch(batch_size: int, seed: int = 0):
    cfg = synthetic.feature_config()
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


def run_speed_bench(out_dir, batch_size: int = 2048, steps: int = 20, d_model: int = 256, num_layers: int = 2,
                    precision: str = "float32", jit_compile: bool = False) -> dict:
    cfg, sizes, feats, targets = _batch(batch_size)
    model = build_model("mdl", cfg, sizes, precision=precision, d_model=d_model, num_layers=num_layers)
    model.compile(jit_compile=jit_compile)
    model.train_on_batch(feats, targets)  # trace + compile
    model.train_on_batch(feats, targets)
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_on_batch(feats, targets, return_dict=True)
    train_s = (time.perf_counter() - start) / steps
    flops_fwd = mdl_forward_flops(model)
    achieved = 3 * flops_fwd * batch_size / train_s / 1e9
    peak = matmul_gflops()

    one = {k: v[:1] for k, v in feats.items()}
    predict = tf.function(lambda f: model.compute_logits(f), jit_compile=jit_compile)
    predict(one)
    lat = []
    for _ in range(200):
        t0 = time.perf_counter()
        predict(one).numpy()
        lat.append((time.perf_counter() - t0) * 1e3)
    big = tf.function(lambda f: model.compute_logits(f), jit_compile=jit_compile)
    big(feats).numpy()
    t0 = time.perf_counter()
    for _ in range(5):
        big(feats).numpy()
    infer_eps = 5 * batch_size / (time.perf_counter() - t0)
    result = {
        "machine": machine_info(),
        "command": (f"mdl-tf bench speed --batch-size {batch_size} --steps {steps} --d-model {d_model} "
                    f"--precision {precision}" + (" --jit-compile" if jit_compile else "")),
        "model": {"d_model": d_model, "num_layers": num_layers, "params": model.param_counts(),
                  "forward_mflops_per_example": round(flops_fwd / 1e6, 3)},
        "train": {"batch_size": batch_size, "seconds_per_step": round(train_s, 4),
                  "examples_per_second": round(batch_size / train_s, 1), "achieved_gflops": round(achieved, 2),
                  "final_loss": float(logs["loss"])},
        "matmul_fp32_gflops": round(peak, 2),
        "fraction_of_matmul_rate": round(achieved / peak, 4),
        "inference": {"batch_size": batch_size, "examples_per_second": round(infer_eps, 1),
                      "batch1_latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
                      "batch1_latency_ms_p99": round(float(np.percentile(lat, 99)), 3)},
    }
    out = Path(out_dir)
    write_json(out / f"speed_{precision}{'_xla' if jit_compile else ''}.json", result)
    return result
