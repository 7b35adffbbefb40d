"""Size any registered model to a dense-parameter budget (`--dense-params N`): within ±5% by its width (d) and, for
the baselines, the tower/expert width (`hidden`); for MDL, d and the FFN multiplier. Embedding tables are not part
of the budget (they are the same for every model); both counts are reported."""
from __future__ import annotations

import json
import math

import numpy as np
import tensorflow as tf

TOLERANCE = 0.05
MAX_D = 1024


class BudgetError(ValueError):
    """No setting of the model's knobs lands within the tolerance of the budget."""


# {(model, feature config, vocabulary sizes, hparams): dense count}: a count builds the whole model, and a process
# that sizes the same model twice (every seed of a benchmark, the trainer and the report) asks the same questions.
_COUNTS: dict = {}


def dense_params(name: str, cfg, vocab_sizes: dict, **hparams) -> int:
    """Dense (non-embedding) parameter count of model `name` built with `hparams` (memoised per process)."""
    from mdl_tf.models import REGISTRY, build_model

    # The constructor's defaults are part of the question (a test may patch them; a model's defaults may change).
    defaults = REGISTRY[name].__init__.__defaults__ if name in REGISTRY else None
    key = json.dumps([name, cfg.to_dict(), vocab_sizes, hparams, defaults], sort_keys=True, default=repr)
    if key not in _COUNTS:
        model = build_model(name, cfg, vocab_sizes, **hparams)
        _COUNTS[key] = model.param_counts()["dense"]
        del model
        tf.keras.backend.clear_session()
    return _COUNTS[key]


def _n_f(cfg, hparams: dict) -> int:
    """N_f as FeatureTokenizer counts it: `feature_tokens` slices, else one token per group of
    `feature_token_groups` (schema groups, or single features with tokenizer="feature")."""
    from mdl_tf.layers.tokenizers import feature_token_groups

    return hparams.get("feature_tokens") or len(feature_token_groups(cfg, hparams.get("tokenizer", "group")))


def _d_step(name: str, cfg, hparams: dict) -> int:
    step = _n_f(cfg, hparams)  # N_f must divide d in either tokenizer
    if name == "mdl":
        step = step * hparams.get("attn_heads", 4) // math.gcd(step, hparams.get("attn_heads", 4))
    return step


def _min_d(name: str, cfg, hparams: dict, step: int) -> int:
    """The smallest valid width: MDL's "mixer" ablations mix N_f + domain tokens, so d must be at least that many."""
    tokens = 1
    if name == "mdl" and "mixer" in (hparams.get("scenario_interaction"), hparams.get("task_interaction")):
        tokens = _n_f(cfg, hparams) + cfg.num_scenarios + 1 + cfg.num_tasks
    return step * max(1, -(-tokens // step))


def _largest_d_below(count, target: int, step: int, min_d: int | None = None) -> int:
    """Largest multiple of `step` (>= min_d) with count(d) <= target (count increases with d); min_d if none."""
    first = (min_d or step) // step
    lo, hi = first, MAX_D // step
    if count(first * step) > target:
        return first * step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid * step) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo * step


def _quadratic(count, samples: list, checks: list):
    """A dense count as an exact quadratic in the sized knobs, or None.

    Every weight of our models is a product of at most two widths (d x d, d x hidden, hidden x hidden, per-token
    d x k*d with k fixed) plus terms linear in them, so the count is a polynomial of degree 2 in (d,) or (d, hidden).
    It is fitted through `samples` (as many points as it has coefficients, 3 or 6 builds) and accepted only if it
    also predicts every point of `checks` exactly; the caller still counts its answer exactly. A model that breaks
    the assumption (a width rounded or clipped inside it) fails a check and is searched with real builds."""
    def monomials(p):
        return [1.0, *p, *(p[i] * p[j] for i in range(len(p)) for j in range(i, len(p)))]

    coef = np.linalg.solve(np.array([monomials(p) for p in samples], dtype=np.float64),
                           np.array([count(*p) for p in samples], dtype=np.float64))

    def poly(*p) -> int:
        return int(round(float(np.dot(coef, monomials(p)))))

    return poly if all(poly(*p) == count(*p) for p in checks) else None


def _search(name: str, count, step: int, min_d: int, target: int, tolerance: float, fixed_k) -> list:
    """[(knobs, count)] every setting the search tried (the caller takes the one nearest the target); `count(**knobs)`
    may be a prediction (`_quadratic`) or a real build (`dense_params`)."""
    tried = []
    if name == "mdl":
        for k in ([fixed_k] if fixed_k else (4, 2, 3, 1, 6, 8)):
            d = _largest_d_below(lambda d: count(d_model=d, ffn_multiplier=k), target, step, min_d)
            for dd in (d, d + step):
                tried.append(({"d_model": dd, "ffn_multiplier": k}, count(d_model=dd, ffn_multiplier=k)))
            best = min(tried, key=lambda t: abs(t[1] - target))
            if abs(best[1] - target) <= tolerance * target:
                break
    else:
        d = _largest_d_below(lambda d: count(d_model=d, hidden=d), target, step)
        for dd in (d, max(step, d - step), d + step):
            lo, hi = 2, 8 * dd
            while lo < hi:  # smallest hidden whose count reaches the target
                mid = (lo + hi) // 2
                if count(d_model=dd, hidden=mid) < target:
                    lo = mid + 1
                else:
                    hi = mid
            for h in (lo - 1, lo):
                if h >= 2:
                    tried.append(({"d_model": dd, "hidden": h}, count(d_model=dd, hidden=h)))
            best = min(tried, key=lambda t: abs(t[1] - target))
            if abs(best[1] - target) <= tolerance * target:
                break
    return tried


def size_to_budget(name: str, cfg, vocab_sizes: dict, target: int, tolerance: float = TOLERANCE,
                   **hparams) -> dict:
    """Hyperparameters (the given ones plus the sized knobs) whose dense count is within `tolerance` of `target`.

    The search reads counts from a quadratic fitted to a few built models (`_quadratic`: about 9 builds instead of
    17-27), then builds the answer to count it exactly; if any prediction was wrong it searches again with builds.
    Returns {"hparams", "dense_params", "target", "relative_error"}; raises BudgetError naming the closest miss."""
    if target <= 0:
        raise BudgetError(f"--dense-params must be positive, got {target}")
    fixed = {k: v for k, v in hparams.items() if k not in ("d_model", "hidden")}
    fixed_k = fixed.pop("ffn_multiplier", None) if name == "mdl" else None
    step = _d_step(name, cfg, fixed)
    min_d = _min_d(name, cfg, fixed, step)

    def exact(**knobs) -> int:
        return dense_params(name, cfg, vocab_sizes, **fixed, **knobs)

    def predicted():
        ds = [min_d + i * step for i in (0, 3, 7, 12)]
        if name == "mdl":
            polys = {}

            def count(d_model, ffn_multiplier):
                if ffn_multiplier not in polys:
                    polys[ffn_multiplier] = _quadratic(lambda d: exact(d_model=d, ffn_multiplier=ffn_multiplier),
                                                       [(d,) for d in ds[:3]], [(ds[3],)])
                poly = polys[ffn_multiplier]
                return poly(d_model) if poly else exact(d_model=d_model, ffn_multiplier=ffn_multiplier)
            return count
        hs = (4, 9, 17)  # the checks use other widths (12, 23) and d (ds[3]): a fit must predict, not recall
        poly = _quadratic(lambda d, h: exact(d_model=d, hidden=h),
                          [(ds[0], hs[0]), (ds[1], hs[0]), (ds[2], hs[0]), (ds[0], hs[1]), (ds[0], hs[2]),
                           (ds[1], hs[1])], [(ds[3], 12), (ds[2], 23)])
        return (lambda d_model, hidden: poly(d_model, hidden)) if poly else exact

    tried = _search(name, predicted(), step, min_d, target, tolerance, fixed_k)
    knobs, got = min(tried, key=lambda t: abs(t[1] - target))
    if exact(**knobs) != got:  # a prediction was wrong: search with real counts
        tried = _search(name, exact, step, min_d, target, tolerance, fixed_k)
        knobs, got = min(tried, key=lambda t: abs(t[1] - target))
    error = (got - target) / target
    if abs(error) > tolerance:
        raise BudgetError(f"{name}: no width lands within ±{tolerance:.0%} of {target:,} dense parameters; the "
                          f"closest is {got:,} ({error:+.1%}) with {knobs}. Pick a budget nearer that, or change "
                          f"the fixed hyperparameters")
    return {"hparams": {**fixed, **knobs}, "dense_params": got, "target": int(target),
            "relative_error": round(error, 4)}
