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
    """For each query (key, ts): the number of training events with the same key and a strictly smaller timestamp,
    and the sum of their labels.

    train_keys, train_ts [M] int64 (keys >= 0), train_labels [M, L] float; keys, ts [N] int64.
    Returns (counts [N] int64, sums [N, L] float64). O((M + N) log M): one sort, two binary searches per query."""
    train_keys, train_ts = np.asarray(train_keys, np.int64), np.asarray(train_ts, np.int64)
    keys, ts = np.asarray(keys, np.int64), np.asarray(ts, np.int64)
    labels = np.asarray(train_labels, np.float64).reshape(len(train_keys), -1)
    if len(train_keys) and (train_keys.min() < 0 or keys.min(initial=0) < 0):
        raise ValueError("keys must be non-negative integers")
    lo = min(train_ts.min(initial=0), ts.min(initial=0))
    span = int(max(train_ts.max(initial=0), ts.max(initial=0)) - lo) + 1
    # One sortable int64 per (key, ts): every key's events are contiguous and ordered by time.
    composite = train_keys * span + (train_ts - lo)
    order = np.argsort(composite, kind="stable")
    composite = composite[order]
    cumulative = np.vstack([np.zeros((1, labels.shape[1])), np.cumsum(labels[order], axis=0)])
    query = keys * span + (ts - lo)
    end = np.searchsorted(composite, query, side="left")      # first event of this key at ts or later
    start = np.searchsorted(composite, keys * span, side="left")  # first event of this key
    return end - start, cumulative[end] - cumulative[start]


def smoothed_rates(counts, sums, means, smoothing: float = SMOOTHING):
    """(sums + smoothing * mean) / (counts + smoothing), per label: [N, L] rates in [0, 1]."""
    counts = np.asarray(counts, np.float64)[:, None]
    return (np.asarray(sums, np.float64) + smoothing * np.asarray(means, np.float64)) / (counts + smoothing)
