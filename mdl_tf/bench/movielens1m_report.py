"""Tables of `mdl-tf bench movielens1m` from its runs.jsonl: tuning, test per scenario x task, anchors, significance.

`summarise(runs, probes)` -> a JSON-able dict; `write_reports(out, summary, probes, runs)` writes quality.json,
quality.md, quality.png and, when there are probes, probes.md. Data variants (`--probe priors=true`) get their own
test tables from the probes at the chosen points (VARIANT_TABLES), never mixed into the tuned ones.
Every number comes from a finished run line; a table holds only the models whose runs are done so far.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from mdl_tf.bench.movielens1m import (ANCHOR_TOLERANCE, ANCHORS, BASELINES, BEST_PUBLISHED, MODELS, SEEDS,
                                      SETTINGS, chosen_trial, run_key, tuning_grid)
from mdl_tf.utils import atomic_write_text, write_json

MIN_USERS = 50  # cells with fewer test users are flagged: a handful of users can swing their AUC


def _ms(values) -> dict:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(arr.mean()) if arr.size else None, "std": float(arr.std(ddof=0)) if arr.size else None,
            "n": int(arr.size)}


def _tuning(runs: dict) -> dict:
    out = {}
    for m in MODELS:
        trials = []
        for trial in tuning_grid(m):
            rec = runs.get(run_key(m, "random", trial, 0))
            trials.append({"trial": trial, "eval_mean_auc": rec["eval"]["mean_auc"] if rec else None,
                           "wall_seconds": rec["wall_seconds"] if rec else None,
                           "best_epoch": rec["best_epoch"] if rec else None})
        out[m] = {"grid": {k: list(v) for k, v in _grid(m).items()}, "trials": trials,
                  "chosen": chosen_trial(runs, m)}
    return out


def _grid(model: str) -> dict:
    from mdl_tf.models import REGISTRY

    return REGISTRY[model].TUNING_GRID


def _table(runs: dict, protocol: str, variant: dict | None = None, records: dict | None = None) -> dict:
    """Test table of each model's chosen point on `protocol` over its seeds. With `variant` (e.g. {"priors": True},
    a data key of `--probe`) the rows are the chosen points with `variant` added, looked up in `records` (the
    probes), so every model in it read the same data variant."""
    rows = {}
    records = runs if records is None else records
    for m in MODELS:
        trial = chosen_trial(runs, m)
        trial = {**trial, **(variant or {})} if trial else None
        recs = [records.get(run_key(m, protocol, trial, s)) for s in SEEDS] if trial else []
        recs = [r for r in recs if r is not None]
        if not recs:
            continue
        cells = sorted(recs[0]["test"]["cells"])
        tasks = sorted(recs[0]["test"]["gauc"])
        first = recs[0]["test_intervals"]
        rows[m] = {
            "seeds": [r["seed"] for r in recs], "trial": trial, "params": recs[0]["params"],
            "hparams": recs[0]["hparams"], "mean_auc": _ms([r["test"]["mean_auc"] for r in recs]),
            "cells": {c: {"auc": _ms([r["test"]["cells"][c]["auc"] for r in recs]),
                          "logloss": _ms([r["test"]["cells"][c]["logloss"] for r in recs]),
                          "per_seed": [r["test"]["cells"][c]["auc"] for r in recs],
                          "users": first[c.split("/")[1]][c.split("/")[0]]["users"],
                          "user_bootstrap_95": _mean_interval([r["test_intervals"][c.split("/")[1]]
                                                               [c.split("/")[0]]["auc"] for r in recs])}
                      for c in cells},
            "pooled": {t: {"auc": _ms([r["test"]["overall"][t]["auc"] for r in recs]),
                           "user_bootstrap_95": _mean_interval([r["test_intervals"][t]["pooled"]["auc"]
                                                                for r in recs])} for t in tasks},
            "gauc": {t: {"value": _ms([r["test"]["gauc"][t] for r in recs]),
                         "user_bootstrap_95": _mean_interval([r["test_intervals"][t]["gauc"] for r in recs])}
                     for t in tasks},
            "best_epochs": [r["best_epoch"] for r in recs],
            "wall_seconds": _ms([r["wall_seconds"] for r in recs]),
            "attention_entropy": _entropy(recs)}
    return {"rows": rows, "mdl_vs_best_baseline": _gains(rows)}


def _entropy(recs: list) -> list | None:
    """Per layer, the domain tokens' attention entropy over the feature tokens (nats, on 2,048 eval rows after
    training; `mdl_tf.training.diagnostics`), mean ± std over the seeds: [{"layer", "scenario", "task", "uniform"}],
    or None for a model without domain tokens. `uniform` (ln N_f) is what an attention that selects nothing reads."""
    per_seed = [r["attention_entropy"] for r in recs if r.get("attention_entropy")]
    if not per_seed:
        return None
    out = []
    for layer in sorted({e["layer"] for entries in per_seed for e in entries}):
        got = [e for entries in per_seed for e in entries if e["layer"] == layer]
        out.append({"layer": layer, "uniform": got[0]["uniform"],
                    **{k: _ms([e[k] for e in got]) for k in ("scenario", "task") if all(k in e for e in got)}})
    return out


def _mean_interval(intervals) -> list | None:
    got = [i for i in intervals if i]
    return [float(np.mean([i[0] for i in got])), float(np.mean([i[1] for i in got]))] if got else None


def _gains(rows: dict) -> dict:
    """Per cell: MDL's relative gain over the best baseline (by mean test AUC) and a paired t-test over seeds."""
    if "mdl" not in rows:
        return {}
    out = {}
    baselines = [b for b in BASELINES if b in rows]
    cells = list(rows["mdl"]["cells"]) + ["mean"]
    for cell in cells:
        def value(m):
            return rows[m]["mean_auc"]["mean"] if cell == "mean" else rows[m]["cells"][cell]["auc"]["mean"]

        def per_seed(m):
            return (None if cell == "mean" else dict(zip(rows[m]["seeds"], rows[m]["cells"][cell]["per_seed"])))

        if not baselines:
            continue
        best = max(baselines, key=value)
        gain = (value("mdl") - value(best)) / value(best)
        entry = {"best_baseline": best, "best_baseline_auc": value(best), "mdl_auc": value("mdl"),
                 "relative_gain": gain, "p_value": None, "significant": None}
        if cell != "mean":
            a, b = per_seed("mdl"), per_seed(best)
            common = sorted(set(a) & set(b))
            if len(common) >= 2:
                diff = np.array([a[s] - b[s] for s in common])
                p = float(stats.ttest_rel([a[s] for s in common], [b[s] for s in common]).pvalue) \
                    if np.any(diff != diff[0]) else (0.0 if diff[0] != 0 else 1.0)
                entry.update(p_value=p, significant=bool(p < 0.05), seeds=common)
        out[cell] = entry
    return out


def _anchors(table: dict) -> dict:
    out = {}
    for m, anchor in ANCHORS.items():
        row = table["rows"].get(m)
        ours = None
        if row:
            ours = {"overall": row["pooled"]["click"]["auc"]["mean"],
                    **{s: row["cells"][f"{s}/click"]["auc"]["mean"] for s in ("under25", "25to34", "35plus")}}
        checks = {}
        for part in ("overall", "under25", "25to34", "35plus"):
            pub = anchor.get(part)
            if pub is None or ours is None:
                continue
            pubs = pub if isinstance(pub, tuple) else (pub,)
            checks[part] = {"published": list(pubs), "ours": ours[part],
                            "within_tolerance": bool(any(abs(ours[part] - p) <= ANCHOR_TOLERANCE for p in pubs))}
        out[m] = {"published_name": anchor["published"], "checks": checks}
    return out


# Data variants read through probes at every probed model's chosen point: (protocol, variant, title).
VARIANT_TABLES = [("temporal", {"priors": True},
                   "Temporal protocol, every model with the item priors (`--probe priors=true` at the chosen points; "
                   "probes, so only the models probed so far)")]


def summarise(runs: dict, probes: dict | None = None) -> dict:
    any_run = next(iter(runs.values()), None)
    random, temporal = _table(runs, "random"), _table(runs, "temporal")
    variants = [{"protocol": p, "variant": v, "title": t, "table": _table(runs, p, v, probes or {})}
                for p, v, t in VARIANT_TABLES]
    return {"machine": any_run["machine"] if any_run else None, "settings": SETTINGS,
            "dense_budget": {p: next((r["dense_budget"] for r in runs.values() if r["protocol"] == p), None)
                             for p in ("random", "temporal")},
            "runs_done": len(runs), "model_selection_split": "eval", "split_reported": "test",
            "tuning": _tuning(runs), "random": random, "temporal": temporal, "anchors": _anchors(random),
            "variants": [v for v in variants if v["table"]["rows"]],
            "best_published": BEST_PUBLISHED,
            "runs": [{k: r[k] for k in ("key", "protocol", "model", "trial", "seed", "wall_seconds", "best_epoch",
                                        "epochs_run")} | {"eval_mean_auc": r["eval"]["mean_auc"],
                                                          "test_mean_auc": r["test"]["mean_auc"]}
                     | ({"adopted_from": r["adopted_from"]} if "adopted_from" in r else {})
                     for r in runs.values()]}


# -- rendering -------------------------------------------------------------------------------------------------------
def _f(stat: dict, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def _table_md(table: dict, title: str) -> list:
    rows = table["rows"]
    if not rows:
        return [f"### {title}", "", "No finished runs yet.", ""]
    cells = sorted(next(iter(rows.values()))["cells"])
    lines = [f"### {title}", "", "Test AUC, mean ± std over seeds (selection on eval).", "",
             "| model | seeds | dense params | mean AUC | " + " | ".join(cells) + " |",
             "|---|---|---|---|" + "---|" * len(cells)]
    for m, r in rows.items():
        lines.append(f"| {m} | {len(r['seeds'])} | {r['params']['dense']:,} | {_f(r['mean_auc'])} | "
                     + " | ".join(_f(r["cells"][c]["auc"]) for c in cells) + " |")
    gains = table["mdl_vs_best_baseline"]
    if gains:
        def g(c):
            e = gains.get(c)
            if not e:
                return "–"
            sig = "" if e["significant"] is None else (" *" if e["significant"] else " (n.s.)")
            return f"{100 * e['relative_gain']:+.2f}% vs {e['best_baseline']}{sig}"

        lines.append("| MDL vs best baseline | | | " + g("mean") + " | " + " | ".join(g(c) for c in cells) + " |")
        lines += ["", "`*`: paired t-test over seeds p < 0.05; `(n.s.)`: not significant."]
    for m, r in rows.items():
        if r.get("attention_entropy"):
            lines += ["", f"{m}: the domain tokens' attention over the feature tokens after training (entropy on 2,048 "
                      "eval rows, nats, mean over heads and rows ± std over seeds; an attention that selects nothing "
                      f"reads ln N_f = {r['attention_entropy'][0]['uniform']:.3f}): " + "; ".join(
                          f"layer {e['layer']} " + ", ".join(f"{k} {_f(e[k], 3)}" for k in ("scenario", "task")
                                                             if k in e)
                          for e in r["attention_entropy"]) + "."]
    lines += ["", "Test logloss:", "", "| model | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(_f(r["cells"][c]["logloss"]) for c in cells) + " |")
    tasks = sorted(next(iter(rows.values()))["gauc"])
    lines += ["", "Pooled AUC and per-user GAUC with per-user bootstrap 95% intervals (200 resamples, mean of the "
              "seeds' bounds); test users per cell: " + ", ".join(
                  f"{c} {next(iter(rows.values()))['cells'][c]['users']}"
                  + (" (< 50: noisy)" if next(iter(rows.values()))["cells"][c]["users"] < MIN_USERS else "")
                  for c in cells) + ".", "",
              "| model | " + " | ".join(f"pooled AUC {t} | GAUC {t}" for t in tasks) + " | wall s/run | best epochs |",
              "|---|" + "---|---|" * len(tasks) + "---|---|"]
    for m, r in rows.items():
        parts = []
        for t in tasks:
            pi, gi = r["pooled"][t]["user_bootstrap_95"], r["gauc"][t]["user_bootstrap_95"]
            parts.append(f"{_f(r['pooled'][t]['auc'])} [{pi[0]:.4f}, {pi[1]:.4f}]" if pi else _f(r["pooled"][t]["auc"]))
            parts.append(f"{_f(r['gauc'][t]['value'])} [{gi[0]:.4f}, {gi[1]:.4f}]" if gi else _f(r["gauc"][t]["value"]))
        lines.append(f"| {m} | " + " | ".join(parts) + f" | {r['wall_seconds']['mean']:.0f} | "
                     f"{','.join(map(str, r['best_epochs']))} |")
    return lines + [""]


def markdown(summary: dict) -> str:
    s = summary
    machine = s["machine"] or {}
    lines = ["# MovieLens-1M: MDL vs 8 baselines, tuned alike", "",
             f"Command: `mdl-tf bench movielens1m` (resumable; {s['runs_done']} runs finished). Machine: "
             f"{machine.get('cpus', '?')} CPUs, {machine.get('processor', '?')}, no GPU, TensorFlow "
             f"{machine.get('tensorflow', '?')}. Settings: batch {s['settings']['batch_size']}, early stopping on "
             f"the eval split (patience {s['settings']['patience']}, cap {s['settings']['epochs']} epochs), every "
             f"model sized to MDL's dense-parameter count at d={s['settings']['reference_d_model']} "
             f"({s['dense_budget']['random']} random / {s['dense_budget']['temporal']} temporal, ±5%).", ""]
    adopted = [r for r in s["runs"] if "adopted_from" in r]
    if adopted:
        lines += [f"{len(adopted)} runs were adopted from probes that trained the same configuration before a flag "
                  "became the default (" + "; ".join(f"{r['model']} {_trial(r['trial'])} seed {r['seed']}"
                                                    for r in adopted) +
                  "): a re-run of another seed under the new default reproduced its probe's eval AUC first "
                  "(`adopted_from` and `adoption_evidence` in runs.jsonl).", ""]
    lines += ["## Published anchors (random protocol, click test AUC)", "",
              "Scenario-Wise-Rec (KDD'24 draft, tables 4 and 7) trains click only with embedding 16, Adam 1e-3; we "
              "train click and like jointly with our two-optimizer step and a multi-hot of all genres (they embed the "
              f"first genre). Tolerance ±{ANCHOR_TOLERANCE}. Their best model: {s['best_published']['model']} "
              f"{s['best_published']['overall']}.", "",
              "| ours | published | overall (ours / pub.) | under25 = d0 | 25to34 = d1 | 35plus = d2 |",
              "|---|---|---|---|---|---|"]
    for m, a in s["anchors"].items():
        def cell(part):
            c = a["checks"].get(part)
            if not c:
                return "–"
            pub = " or ".join(f"{p:.4f}" for p in c["published"])
            return f"{c['ours']:.4f} / {pub} {'✓' if c['within_tolerance'] else '✗'}"

        lines.append(f"| {m} | {a['published_name']} | " + " | ".join(
            cell(p) for p in ("overall", "under25", "25to34", "35plus")) + " |")
    lines += ["", "## Tuning (random protocol, seed 0, mean eval AUC over the 6 cells)", "",
              "| model | grid | " + " | ".join(f"trial {i + 1}" for i in range(4)) + " | chosen |",
              "|---|---|---|---|---|---|---|"]
    for m, t in s["tuning"].items():
        grid = ", ".join(f"{k} ∈ {v}" for k, v in t["grid"].items())
        trials = [f"{_trial(x['trial'])}: {x['eval_mean_auc']:.4f}" if x["eval_mean_auc"] is not None
                  else f"{_trial(x['trial'])}: –" for x in t["trials"]]
        chosen = _trial(t["chosen"]) if t["chosen"] else "–"
        lines.append(f"| {m} | {grid} | " + " | ".join(trials) + f" | {chosen} |")
    lines += [""]
    lines += _table_md(s["random"], "Random protocol (seeded 80/10/10; 3 seeds)")
    lines += _table_md(s["temporal"], "Temporal protocol (80/10/10 by time, with history; chosen points of random)")
    for v in s.get("variants", []):
        lines += _table_md(v["table"], v["title"])
    return "\n".join(lines) + "\n"


def _trial(trial: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.items())


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [(p, summary[p]["rows"]) for p in ("random", "temporal") if summary[p]["rows"]]
    if not tables:
        return
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 3.6), squeeze=False)
    for ax, (protocol, rows) in zip(axes[0], tables):
        names = list(rows)
        means = [rows[n]["mean_auc"]["mean"] for n in names]
        stds = [rows[n]["mean_auc"]["std"] for n in names]
        ax.bar(names, means, yerr=stds, capsize=3, color=["tab:red" if n == "mdl" else "tab:blue" for n in names])
        ax.set_ylim(min(means) - 0.01, max(means) + 0.01)
        ax.set_title(f"MovieLens-1M, {protocol} protocol")
        ax.set_ylabel("mean test AUC (6 cells)")
        ax.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def probes_markdown(probes: dict, runs: dict) -> str:
    """probes.md: every probe (probes.jsonl) beside the tuning run of its point and seed, on eval.

    A probe's point is its trial's tuning-grid keys; its change, the rest (a fixed-width probe's copied d and FFN
    multiplier shown as "width"; a probed width knob is the change, with the d it was sized to). The eval change is
    given only when the probe ran under today's model defaults (its key recomputes to itself): a probe from before a
    default changed is listed without it."""
    from mdl_tf.bench.movielens1m import WIDTH_KEYS

    lines = ["# MovieLens-1M probes (`mdl-tf bench movielens1m --probe NAME=VALUE`)", "",
             "One flag changed at a model's chosen (or first) tuning point, read on **eval** beside the tuning run of "
             "the same point and seed (Δ eval); never in the tables of quality.md. \"width d=…\" marks a fixed-width "
             "probe (`--probe-fixed-width`: trained at the tuning run's width, not re-sized to the budget).", "",
             "| model | change | point | seed | eval mean AUC | Δ eval | test mean AUC | best epoch | dense params | "
             "layer-1 entropy (scenario / task) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for rec in sorted(probes.values(), key=lambda r: r.get("finished", "")):
        model, protocol, trial, seed = rec["model"], rec["protocol"], rec["trial"], rec["seed"]
        point = {k: v for k, v in trial.items() if k in _grid(model)}
        # A fixed-width probe copies d (and the FFN multiplier) from its tuning run; without d, a width knob in the
        # trial is the change itself (e.g. ffn_multiplier=2, then sized to the budget: the d it got is shown).
        copied = "d_model" in trial
        change = {k: v for k, v in trial.items() if k not in point and not (copied and k in WIDTH_KEYS)}
        width = {k: v for k, v in trial.items() if copied and k in WIDTH_KEYS}
        sized = (f" (sized to d_model={rec.get('hparams', {}).get('d_model')})"
                 if not copied and set(change) & set(WIDTH_KEYS) else "")
        label = _trial(change) + (f" (width {_trial(width)})" if width else sized) or "(none)"
        current = run_key(model, protocol, trial, seed) == rec["key"]
        reference = runs.get(run_key(model, protocol, point, seed)) if current else None
        delta = (f"{rec['eval']['mean_auc'] - reference['eval']['mean_auc']:+.4f}" if reference else
                 "—" if current else "(earlier defaults)")
        entropy = next((e for e in rec.get("attention_entropy") or [] if e.get("layer") == 1), {})
        ent = " / ".join(f"{entropy[k]:.2f}" if k in entropy else "—" for k in ("scenario", "task"))
        lines.append(f"| {model} | {label} | {_trial(point)} | {seed} | {rec['eval']['mean_auc']:.4f} | {delta} | "
                     f"{rec['test']['mean_auc']:.4f} | {rec.get('best_epoch')} | {rec['params']['dense']:,} | "
                     f"{ent if entropy else '—'} |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, summary: dict, probes: dict | None = None, runs: dict | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "quality.json", summary)
    atomic_write_text(out / "quality.md", markdown(summary))
    plot(summary, out / "quality.png")
    if probes:
        atomic_write_text(out / "probes.md", probes_markdown(probes, runs or {}))
