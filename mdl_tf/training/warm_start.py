"""Warm start: continue training from an earlier model's weights and optimizer slots, carrying embedding rows over
by token value.

Every trained model leaves a *warm-start state* next to its SavedModel (the Trainer writes
`<model artifact>/warm_start/`; `save_state`):

  manifest.json              written last (a state without it is incomplete): model name, hparams, the scenario
                             and task names in token order (checked against today's config), the weights in
                             `model.model_weights()` order (name, shape, the id feature whose table it is), which
                             optimizer slots were saved, and per vocabulary owner how its ids were indexed
                             (`{"vocabulary": size}` or `{"hash_buckets": N}`)
  checkpoint/state*          one `tf.train.Checkpoint` holding every weight (`v<i>`), its optimizer slots
                             (`s<i><slot>`, e.g. Adagrad's accumulator, RMSprop's velocity) and both optimizers'
                             iteration counters
  vocabularies/<owner>.txt   the ids of every vocabulary owner, one per line, row `2 + line` of its table

`warm_start(model, state_dir, vocabularies, cfg)` loads such a state into a freshly built model of the same
architecture whose tables were sized from *today's* vocabularies. Dense weights and their slots are copied as they
are. An embedding table's rows are remapped by token value: rows 0 (padding) and 1 (OOV) carry over; an id in both
vocabularies gets its old row (and old slot rows); an id new today keeps its fresh initial row (and the optimizer's
initial slot value); an id only in the old vocabulary is dropped. Hashed features (`hash_buckets`) map bucket for
bucket. The returned report says, per vocabulary owner, how many ids were carried, new and dropped.
"""
from __future__ import annotations

import inspect
import json
import logging
import re

import numpy as np
import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.data.transform import FIRST_ID
from mdl_tf.errors import UserError
from mdl_tf.models.base import OPTIMIZERS, with_all_hparams
from mdl_tf.utils import join, write_text

log = logging.getLogger(__name__)

STATE_DIR = "warm_start"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint/state"
VOCAB_DIR = "vocabularies"
FORMAT_VERSION = 1
# The slot lists of tf.keras (Keras 2) RMSprop and Adagrad, indexed like the optimizer's build var_list.
SLOT_ATTRS = ("_velocities", "_momentums", "_average_gradients", "_accumulators")
_TABLE_NAME = re.compile(r"^(?:emb|imp)_(.+)$")


class WarmStartError(UserError):
    """The base model cannot warm-start this one (other architecture, other id indexing, incomplete state)."""


# -- helpers -------------------------------------------------------------------------------------------------------
def _as_bytes(token) -> bytes:
    return token if isinstance(token, bytes) else str(token).encode("utf-8")


def _constructor_defaults(model) -> dict:
    """{flag: default, as JSON} of the constructor of `model`'s class and its bases."""
    out = {}
    for cls in type(model).__mro__:
        if "__init__" in vars(cls) and cls.__module__.startswith("mdl_tf"):
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.default is not inspect.Parameter.empty and p.name not in out:
                    out[p.name] = json.loads(json.dumps(p.default, default=repr))
    return out


def table_features(model, cfg: FeatureConfig) -> dict:
    """{variable ref: id feature name} for every embedding table of an id feature (`emb_<feature>`,
    `imp_<feature>` SparseEmbedding layers); other tables (scenario/task rows) are not keyed by ids."""
    ids = {f.name for f in cfg.features if f.is_id_feature}
    out = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        m = _TABLE_NAME.match(layer.name) if getattr(layer, "is_sparse_table", False) else None
        if m and m.group(1) in ids:
            for v in layer.weights:
                out[v.ref()] = m.group(1)
    return out


def _slots(optimizer, variable) -> dict:
    """{slot attribute: slot variable} of `variable` in a built tf.keras optimizer ({} when it holds none)."""
    index = getattr(optimizer, "_index_dict", None)
    if optimizer is None or not index or optimizer._var_key(variable) not in index:
        return {}
    i = index[optimizer._var_key(variable)]
    return {a: getattr(optimizer, a)[i] for a in SLOT_ATTRS if len(getattr(optimizer, a, None) or []) > i}


def _optimizers(model) -> dict:
    """{"dense"|"sparse": the model's optimizer of that role}, for the roles the model has compiled."""
    return {role: getattr(model, attr) for role, attr in OPTIMIZERS.items() if getattr(model, attr, None) is not None}


def _indexing(cfg: FeatureConfig, vocabularies: dict) -> dict:
    out = {}
    for f in cfg.features:
        if not f.is_id_feature:
            continue
        owner = cfg.feature(cfg.vocab_owner(f))
        out[owner.name] = ({"hash_buckets": int(owner.hash_buckets)} if owner.is_hashed
                           else {"vocabulary": len(vocabularies[owner.name])})
    return out


# -- saving --------------------------------------------------------------------------------------------------------
def save_state(directory, model, cfg: FeatureConfig, vocabularies: dict, metadata: dict,
               with_slots: bool = True) -> dict:
    """Write the warm-start state of a trained `model` into `directory` (see the module docstring).

    vocabularies: {owner: [token, ...]} for every vocabulary owner (hashed owners need none), in row order (row
    2 + i holds token i). metadata: at least {"model", "hparams"}. with_slots=False saves the weights only (used
    when the optimizer lives in a multi-worker strategy). Returns the manifest."""
    directory = str(directory)
    tables = table_features(model, cfg)
    entries, objects = [], {}
    by_role = _optimizers(model) if with_slots else {}
    for i, v in enumerate(model.model_weights()):
        objects[f"v{i}"] = v
        slots = {}
        for opt in by_role.values():
            slots.update(_slots(opt, v))
        for attr, slot in slots.items():
            objects[f"s{i}{attr}"] = slot
        entries.append({"name": v.name, "shape": [int(d) for d in v.shape], "table": tables.get(v.ref()),
                        "slots": sorted(slots)})
    iterations = {}
    for key, opt in by_role.items():
        objects[f"iterations_{key}"] = opt.iterations
        iterations[key] = int(opt.iterations.numpy())
    tf.io.gfile.makedirs(join(directory, VOCAB_DIR))
    for owner, tokens in vocabularies.items():
        with tf.io.gfile.GFile(join(directory, VOCAB_DIR, f"{owner}.txt"), "wb") as f:
            f.write(b"".join(_as_bytes(t) + b"\n" for t in tokens))
    tf.train.Checkpoint(**objects).write(join(directory, CHECKPOINT))
    manifest = {"format": FORMAT_VERSION, **with_all_hparams(model, metadata),
                "scenarios": list(cfg.scenario.values), "tasks": list(cfg.task_names),
                "indexing": _indexing(cfg, vocabularies),
                "weights": entries, "iterations": iterations, "with_slots": bool(with_slots)}
    write_text(join(directory, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_manifest(directory) -> dict | None:
    """The state's manifest, or None when `directory` holds no complete warm-start state."""
    path = join(directory, MANIFEST)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def read_vocabulary(directory, owner: str) -> list:
    """The saved ids of `owner` as bytes, in row order (row 2 + i)."""
    with tf.io.gfile.GFile(join(directory, VOCAB_DIR, f"{owner}.txt"), "rb") as f:
        return f.read().split(b"\n")[:-1]  # every line ends in a newline


# -- loading -------------------------------------------------------------------------------------------------------
def row_map(old_tokens, new_tokens) -> tuple:
    """(src [k], dst [k], counts) mapping rows of an old vocabulary table into a new one by token value.

    Rows 0 (padding) and 1 (OOV) map to themselves; token i of the old vocabulary sits in row 2 + i.
    counts = {"carried", "new", "dropped"} over the vocabulary ids (padding and OOV not counted)."""
    old_index = {_as_bytes(t): i for i, t in enumerate(old_tokens)}
    src, dst = [0, 1], [0, 1]
    for j, t in enumerate(new_tokens):
        i = old_index.get(_as_bytes(t))
        if i is not None:
            src.append(FIRST_ID + i)
            dst.append(FIRST_ID + j)
    carried = len(src) - 2
    return (np.asarray(src, np.int64), np.asarray(dst, np.int64),
            {"carried": carried, "new": len(new_tokens) - carried, "dropped": len(old_tokens) - carried})


def _remapped(old: np.ndarray, fresh: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    out = np.array(fresh, copy=True)
    out[dst] = old[src]
    return out


def _short_name(name: str) -> str:
    """A weight's name without the model's own (possibly uniquified) top-level scope and the ':0'."""
    return re.sub(r":\d+$", "", name.split("/", 1)[-1])


def owner_maps(manifest: dict, state_dir, cfg: FeatureConfig, vocabularies: dict) -> dict:
    """{owner: (src, dst, report)} for every id owner of `cfg`, checked against the state's id indexing."""
    maps = {}
    for owner, now in _indexing(cfg, vocabularies).items():
        then = manifest["indexing"].get(owner)
        if then is None:
            raise WarmStartError(f"warm start: the base model has no embedding table for '{owner}'; it was trained "
                                 f"with another feature config: train from scratch (drop --warm-start) once")
        if "hash_buckets" in now or "hash_buckets" in then:
            if now != then:
                raise WarmStartError(
                    f"warm start: feature '{owner}' was indexed as {then} in the base model and is {now} now; ids "
                    f"cannot be carried over: train from scratch (drop --warm-start) once after changing hash_buckets")
            n = now["hash_buckets"] + FIRST_ID
            rows = np.arange(n, dtype=np.int64)
            maps[owner] = (rows, rows, {"hash_buckets": now["hash_buckets"], "carried": now["hash_buckets"],
                                        "new": 0, "dropped": 0})
        else:
            src, dst, counts = row_map(read_vocabulary(state_dir, owner), vocabularies[owner])
            maps[owner] = (src, dst, {"vocabulary": [then["vocabulary"], now["vocabulary"]], **counts})
    return maps


def warm_start(model, state_dir, cfg: FeatureConfig, vocabularies: dict, metadata: dict | None = None) -> dict:
    """Load the warm-start state in `state_dir` into `model` (built and compiled; called before training, inside
    the strategy scope the model was built in).

    vocabularies: {owner: [token, ...]} of *this* run (row 2 + i holds token i); metadata: {"model", "hparams"} of
    this run, which must equal the base model's. Returns {"features": {owner: {carried, new, dropped, ...}},
    "weights": n, "slots": n, "iterations": {...}}.
    Raises WarmStartError when the state is incomplete or the architecture or id indexing differs."""
    state_dir = str(state_dir)
    manifest = read_manifest(state_dir)
    if manifest is None:
        raise WarmStartError(f"warm start: {state_dir} holds no complete warm-start state ({MANIFEST} missing)")
    for key, now in (("scenarios", list(cfg.scenario.values)), ("tasks", list(cfg.task_names))):
        then = manifest.get(key)  # states written before this was recorded have neither: the shape check catches it
        if then is not None and then != now:
            raise WarmStartError(
                f"warm start: the base model's {key} are {then}, this run's feature config has {now}; tokens are "
                f"carried by position: list the base model's {key} in the same order in features.yaml (a scenario "
                f"or task onboarded with --add-scenario last), or train from scratch (drop --warm-start)")
    for key, value in with_all_hparams(model, metadata or {}).items():
        value, stored = json.loads(json.dumps(value)), manifest.get(key)  # compared as the manifest stores them
        if key == "hparams" and isinstance(stored, dict):
            # A state saved before every hparam was recorded (or before a flag existed) lacks some: those compare
            # only when this run sets them away from the constructor default (the weight check below still
            # catches a changed default that changes the weights).
            defaults = _constructor_defaults(model)
            value = {k: v for k, v in value.items() if k in stored or k not in defaults or v != defaults[k]}
        if stored != value:
            raise WarmStartError(
                f"warm start: the base model's {key} is {manifest.get(key)!r}, this run's {value!r}; warm start "
                f"continues the same architecture: pass the base model's {key}, or train from scratch "
                f"(drop --warm-start)")
    if not model.built:
        model.build_with_dummy_batch()
    model.build_optimizers()  # slots exist before they are assigned below
    weights = model.model_weights()
    saved = manifest["weights"]
    if len(weights) != len(saved):
        raise WarmStartError(f"warm start: the base model has {len(saved)} weights, this model {len(weights)}; "
                             f"train from scratch (drop --warm-start) after changing the model")
    maps = owner_maps(manifest, state_dir, cfg, vocabularies)
    tables = table_features(model, cfg)
    reader = tf.train.load_checkpoint(join(state_dir, CHECKPOINT))
    opts = list(_optimizers(model).values())
    n_slots = 0

    def value(key):
        return reader.get_tensor(f"{key}/.ATTRIBUTES/VARIABLE_VALUE")

    for i, (v, entry) in enumerate(zip(weights, saved)):
        feature = tables.get(v.ref())
        if _short_name(v.name) != _short_name(entry["name"]) or feature != entry["table"]:
            raise WarmStartError(f"warm start: weight {i} is '{v.name}' here and '{entry['name']}' in the base "
                                 f"model; train from scratch (drop --warm-start) after changing the model")
        slots = {}
        for opt in opts:
            slots.update(_slots(opt, v))
        targets = [(v, f"v{i}")] + [(slots[a], f"s{i}{a}") for a in entry["slots"] if a in slots]
        for var, key in targets:
            old = value(key)
            if feature is not None:
                src, dst, _ = maps[cfg.vocab_owner(cfg.feature(feature))]
                new = _remapped(old, var.numpy(), src, dst)
            elif list(old.shape) != [int(d) for d in var.shape]:
                raise WarmStartError(f"warm start: '{v.name}' has shape {list(var.shape)} here and "
                                     f"{list(old.shape)} in the base model; pass the base model's hparams or train "
                                     f"from scratch (drop --warm-start)")
            else:
                new = old
            var.assign(tf.cast(new, var.dtype))
        n_slots += len(targets) - 1
    for key, opt in _optimizers(model).items():
        if key in manifest.get("iterations", {}):
            opt.iterations.assign(value(f"iterations_{key}"))
    report = {"features": {owner: {"features": sorted(f.name for f in cfg.features if f.is_id_feature
                                                      and cfg.vocab_owner(f) == owner), **rep}
                           for owner, (_, _, rep) in maps.items()},
              "weights": len(weights), "slots": n_slots, "iterations": manifest.get("iterations", {})}
    return report


def describe(report: dict) -> list:
    """One human line per vocabulary owner: 'user_id: 812 ids carried, 95 new, 60 dropped'."""
    lines = []
    for owner, r in sorted(report["features"].items()):
        if "hash_buckets" in r:
            lines.append(f"{owner}: {r['hash_buckets']:,} hash buckets carried 1:1")
        else:
            lines.append(f"{owner}: {r['carried']:,} ids carried, {r['new']:,} new (fresh rows), "
                         f"{r['dropped']:,} dropped")
    return lines
