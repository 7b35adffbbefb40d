"""Time-safe label statistics: the priors MDL's domain tokens read (MDL_SPEC §3.2-3.3, `prior_for` in features.yaml).

An event's prior is computed from *training* events of the same key (an item, an item within a scenario) that happened
strictly earlier than the event: its own label, labels of events at the same timestamp and anything from the eval or
test split never reach it. The same rule gives the rows of every split their value, so a model sees at serving time
what it saw in training: the statistics a feature store would hold at the moment of the request.
"""
from __future__ import annotations

import numpy as np

# Pseudo-events at the training mean that shrink a rate with few earlier events towards it: an item seen once
# earlier gets (label + 20 * mean) / 21, not 0 or 1.
SMOOTHING = 20


def earlier_counts_and_sums(train_keys, train_ts, train_labels, keys, ts):
    """For each query (key, ts): over the training events with the same key and a strictly smaller timestamp, how
    many there are, how many of them have each label known, and the sum of the known labels.

    train_keys, train_ts [M] int (keys >= 0; any timestamp unit), train_labels [M] or [M, L] float (NaN = unknown);
    keys, ts [N]. Returns (events [N] int64, labelled [N, L] int64, sums [N, L] float64). One sort and two binary
    searches per query: O((M + N) log(M + N)). Raises ValueError for negative keys."""
    train_keys, keys = np.asarray(train_keys, np.int64), np.asarray(keys, np.int64)
    labels = np.asarray(train_labels, np.float64)
    labels = labels[:, None] if labels.ndim == 1 else labels
    if (len(train_keys) and train_keys.min() < 0) or (len(keys) and keys.min() < 0):
        raise ValueError("keys must be non-negative integers")
    # Timestamps as dense ranks over both sets: the order is all that matters, and it keeps key * span + rank far
    # from int64 overflow whatever the unit (seconds, nanoseconds).
    stamps, rank = np.unique(np.concatenate([np.asarray(train_ts), np.asarray(ts)]), return_inverse=True)
    span = len(stamps) + 1
    top = max(train_keys.max(initial=0), keys.max(initial=0))
    if (top + 1) * span >= 2 ** 62:
        raise ValueError(f"{span - 1} distinct timestamps x keys up to {top} do not fit one int64 sort key; compute "
                         f"the priors in chunks of keys")
    composite = train_keys * span + rank[: len(train_keys)]  # every key's events contiguous, ordered by time
    order = np.argsort(composite, kind="stable")
    composite, labels = composite[order], labels[order]
    known = np.isfinite(labels)

    def prefix(x):  # [M + 1, L]: sums of the first i sorted events
        return np.vstack([np.zeros((1, x.shape[1]), x.dtype), np.cumsum(x, axis=0)])

    labelled, sums = prefix(known.astype(np.int64)), prefix(np.where(known, labels, 0.0))
    end = np.searchsorted(composite, keys * span + rank[len(train_keys):], side="left")  # first at ts or later
    start = np.searchsorted(composite, keys * span, side="left")                        # first of this key
    return end - start, labelled[end] - labelled[start], sums[end] - sums[start]


def smoothed_rates(labelled, sums, means, smoothing: float = SMOOTHING):
    """(sums + smoothing * mean) / (labelled + smoothing), per label: [N, L] rates in [0, 1] (the mean where no
    earlier event has a known label)."""
    labelled = np.asarray(labelled, np.float64)
    labelled = labelled[:, None] if labelled.ndim == 1 else labelled
    return (np.asarray(sums, np.float64) + smoothing * np.asarray(means, np.float64)) / (labelled + smoothing)
