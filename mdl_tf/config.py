"""The feature config: one source of truth for the roles of a dataset's columns.

`schemas/<dataset>/features.yaml` declares every column's role (categorical, numeric, multi-hot, sequence), its token
group, whether it feeds the scenario or task tokens (`important_for`), the scenario column (and an optional
multi-scenario membership column) and the task labels. The preprocessing, the model builders, the serving signatures
and the evaluator all read it through `FeatureConfig`.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional

import yaml

from mdl_tf.errors import UserError

FEATURE_KINDS = ("categorical", "numeric", "multi_hot", "sequence")
DOMAINS = ("scenario", "task")
CONFIG_FILE = "features.yaml"


class ConfigError(UserError):
    """A feature config that cannot be used; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One raw input column.

    kind:          categorical (one id), numeric (one float), multi_hot (a `separator`-joined id set) or sequence
                   (a `separator`-joined id list, oldest first).
    group:         the semantic token group the feature's embedding goes to.
    important_for: domains ("scenario", "task") whose tokens read this feature as ê_imp (from the feature's own
                   embedding by default; MDL's `imp_tables="own"` re-embeds it in the tokenizers' own tables).
    min_frequency: ids seen fewer times in training map to the OOV id.
    max_len:       multi_hot/sequence length after truncation and padding.
    shares_vocab_with: a sequence of ids of another categorical feature (e.g. the history of `item_id`); it uses that
                   feature's vocabulary and embedding table, and that feature is the DIN target.
    prior_for:     (domain, name) of a numeric feature that is also a prior of one scenario ("scenario", value) or
                   task ("task", name): MDL's domain tokenizers concatenate it to that token's ê_spec / ê_task
                   (MDL_SPEC §3.2-3.3, e.g. the item's historical click rate within the scenario); every other model
                   reads it as an ordinary numeric feature of its group. Each scenario (task) must get the same number
                   of priors, declared in the same order, since the i-th prior of every token feeds the same input.
                   Priors derived from labels must be time-safe (computed from strictly earlier training events).
    hash_buckets:  when set (N >= 1), ids are hashed into N buckets (ids 2..N+1; 0 padding, 1 missing) with a stable
                   fingerprint hash instead of a vocabulary fitted on the training data: no vocabulary to compute,
                   at the cost of collisions. Categorical, multi_hot and sequence features only; a feature and the
                   one whose vocabulary it shares must both be hashed into the same N, or neither.
    """

    name: str
    kind: str
    group: str
    important_for: tuple = ()
    min_frequency: int = 1
    max_len: int = 1
    separator: str = "|"
    shares_vocab_with: Optional[str] = None
    dtype: str = "string"  # raw column type in the files: string | int | float
    hash_buckets: Optional[int] = None
    prior_for: Optional[tuple] = None

    @property
    def is_id_feature(self) -> bool:
        return self.kind != "numeric"

    @property
    def is_hashed(self) -> bool:
        return self.hash_buckets is not None


@dataclasses.dataclass(frozen=True)
class ScenarioSpec:
    column: str
    values: tuple
    membership_column: Optional[str] = None
    separator: str = "|"
    dtype: str = "string"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    label: str


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    name: str
    version: int
    token_groups: tuple
    features: tuple
    scenario: ScenarioSpec
    tasks: tuple
    user_column: Optional[str] = None
    query_column: Optional[str] = None
    time_column: Optional[str] = None
    embedding_dim: int = 16
    slice_columns: tuple = ()  # extra raw columns the Evaluator slices by (overall and the scenario are always there)

    # -- derived views -------------------------------------------------------------------------------------------
    @property
    def task_names(self) -> list:
        return [t.name for t in self.tasks]

    @property
    def label_columns(self) -> list:
        return [t.label for t in self.tasks]

    @property
    def scenario_names(self) -> list:
        return list(self.scenario.values)

    @property
    def num_scenarios(self) -> int:
        return len(self.scenario.values)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_token_groups(self) -> int:
        return len(self.token_groups)

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def features_of_kind(self, *kinds) -> list:
        return [f for f in self.features if f.kind in kinds]

    def important_features(self, domain: str) -> list:
        return [f for f in self.features if domain in f.important_for]

    def domain_priors(self, domain: str) -> list:
        """[[feature name, ...] per scenario (or task), in the config's order]: the numeric priors of each token of
        `domain` (`prior_for`), each inner list in declaration order; [] when the domain has none."""
        names = self.scenario_names if domain == "scenario" else self.task_names
        per = [[f.name for f in self.features if f.prior_for == (domain, n)] for n in names]
        return per if any(per) else []

    def vocab_owner(self, spec: FeatureSpec) -> str:
        """The feature whose vocabulary (and embedding table) `spec` uses."""
        return spec.shares_vocab_with or spec.name

    @property
    def raw_feature_columns(self) -> list:
        """Every raw column the model may read: the features, the scenario column and the membership column.

        Labels are never part of it (validated at load time)."""
        cols = [f.name for f in self.features]
        for c in (self.scenario.column, self.scenario.membership_column):
            if c and c not in cols:
                cols.append(c)
        return cols

    @property
    def required_columns(self) -> list:
        cols = self.raw_feature_columns + self.label_columns
        for c in (self.user_column, self.query_column, self.time_column):
            if c and c not in cols:
                cols.append(c)
        return cols

    def to_dict(self) -> dict:
        def feat(f: FeatureSpec) -> dict:
            d = {"name": f.name, "kind": f.kind, "group": f.group}
            if f.important_for:
                d["important_for"] = list(f.important_for)
            if f.min_frequency != 1:
                d["min_frequency"] = f.min_frequency
            if f.kind in ("multi_hot", "sequence"):
                d["max_len"] = f.max_len
                d["separator"] = f.separator
            if f.shares_vocab_with:
                d["shares_vocab_with"] = f.shares_vocab_with
            if f.dtype != _default_dtype(f.kind):
                d["dtype"] = f.dtype
            if f.is_hashed:
                d["hash_buckets"] = f.hash_buckets
            if f.prior_for:
                d["prior_for"] = {f.prior_for[0]: f.prior_for[1]}
            return d

        scenario = {"column": self.scenario.column, "values": list(self.scenario.values)}
        if self.scenario.dtype != "string":
            scenario["dtype"] = self.scenario.dtype
        if self.scenario.membership_column:
            scenario["membership_column"] = self.scenario.membership_column
            scenario["separator"] = self.scenario.separator
        out = {"name": self.name, "version": self.version, "embedding_dim": self.embedding_dim,
               "token_groups": list(self.token_groups), "scenario": scenario,
               "tasks": [{"name": t.name, "label": t.label} for t in self.tasks],
               "features": [feat(f) for f in self.features]}
        for key in ("user_column", "query_column", "time_column"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.slice_columns:
            out["slice_columns"] = list(self.slice_columns)
        return out


DTYPES = ("string", "int", "float")


def _default_dtype(kind: str) -> str:
    return "float" if kind == "numeric" else "string"


# The keys each level of features.yaml may hold: anything else is refused (a misspelt `hash_bucket:` or
# `min_freq:` would otherwise load and silently do nothing).
KEYS = {
    "top": ("name", "version", "embedding_dim", "token_groups", "scenario", "tasks", "features", "user_column",
            "query_column", "time_column", "slice_columns"),
    "scenario": ("column", "values", "dtype", "membership_column", "separator"),
    "task": ("name", "label"),
    "feature": tuple(f.name for f in dataclasses.fields(FeatureSpec)),
}


def _known_keys(mapping, level: str, where: str, strict: bool) -> None:
    """ConfigError unless `mapping` is a mapping; when `strict`, also for a key `KEYS[level]` does not list, with the
    closest known key when one is near."""
    import difflib

    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(KEYS[level])}; got {mapping!r}")
    unknown = [str(k) for k in mapping if k not in KEYS[level]] if strict else []
    if unknown:
        close = {k: difflib.get_close_matches(k, KEYS[level], n=1, cutoff=0.6) for k in unknown}
        hint = "; ".join(f"did you mean '{g[0]}' for '{k}'?" for k, g in close.items() if g)
        raise ConfigError(f"{where}: unknown key(s) {unknown}{' (' + hint + ')' if hint else ''}; the keys here "
                          f"are {', '.join(KEYS[level])}")


def _int_field(mapping: dict, key: str, default: int, where: str, least: int | None = None) -> int:
    """An integer field of the YAML (default when absent); text, floats and booleans are refused by name, and so is
    a value below `least`."""
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    if least is not None and value < least:
        raise ConfigError(f"{where}: '{key}' must be at least {least}, got {value}")
    return value


def _list(mapping: dict, key: str, where: str, default=None) -> list:
    """A list field of the YAML; a text or a mapping is refused (iterating `values: home` gave h, o, m, e)."""
    value = _require(mapping, key, where) if default is None else mapping.get(key, default)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: '{key}' must be a list, e.g. [{value}]; got {value!r}")
    return list(value)


def is_plain_int(text: str) -> bool:
    """Whether `text` is an integer as `str(int)` writes it (7, -7, 0; not 07, +7, --7, or a non-ASCII digit)."""
    return re.fullmatch(r"-?(0|[1-9][0-9]*)", text) is not None


def _separator(mapping: dict, where: str, strict: bool) -> str:
    value = mapping.get("separator", "|")
    if strict and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: 'separator' must be a non-empty text, got {value!r} (the default is '|')")
    return str(value)


def _hash_buckets(mapping: dict, kind: str, min_frequency: int, where: str) -> Optional[int]:
    """`hash_buckets` of one feature (None when absent); refused on numeric features, below 1, or with a
    `min_frequency` (which needs a vocabulary)."""
    if mapping.get("hash_buckets") is None:
        return None
    buckets = _int_field(mapping, "hash_buckets", 0, where)
    if kind == "numeric":
        raise ConfigError(f"{where}: hash_buckets is for id features (categorical, multi_hot, sequence); a numeric "
                          f"feature has no ids to hash: remove 'hash_buckets'")
    if buckets < 1:
        raise ConfigError(f"{where}: hash_buckets must be an integer >= 1 (the number of embedding rows ids are "
                          f"hashed into, e.g. a few times the expected number of distinct ids), got {buckets}")
    if min_frequency != 1:
        raise ConfigError(f"{where}: min_frequency needs a vocabulary and a hashed feature has none: remove "
                          f"'min_frequency' or 'hash_buckets'")
    return buckets


def _prior_for(mapping: dict, kind: str, where: str) -> Optional[tuple]:
    """`prior_for: {scenario: <value>}` or `{task: <name>}` of one feature as (domain, name); None when absent."""
    raw = mapping.get("prior_for")
    if raw is None:
        return None
    example = "e.g. `prior_for: {scenario: home}` or `prior_for: {task: click}`"
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in DOMAINS:
        raise ConfigError(f"{where}: prior_for must name one scenario or one task ({example}), got {raw!r}")
    if kind != "numeric":
        raise ConfigError(f"{where}: only numeric features can be priors of a domain token (prior_for); this one "
                          f"is {kind}")
    domain, name = next(iter(raw.items()))
    return domain, str(name)


def _require(mapping: dict, key: str, where: str):
    if key not in mapping:
        raise ConfigError(f"{where}: missing required field '{key}'")
    return mapping[key]


def from_dict(raw: dict, source: str = "<dict>", strict: bool = False) -> FeatureConfig:
    """The FeatureConfig of a features.yaml mapping; ConfigError naming `source`, the key and the fix.

    strict: a file a person wrote (`load`): unknown keys, values below a key's floor (min_frequency 0), empty
    separators, YAML booleans or non-plain integers as scenario values and two tasks on one label are refused too.
    Without it (the configs stored in SavedModels and pipeline specs, written by `to_dict` of this or an older
    version) those pass as they always did, so an older model still loads, serves and onboards."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    _known_keys(raw, "top", source, strict)
    groups = tuple(_list(raw, "token_groups", source))
    if not groups or len(set(groups)) != len(groups):
        raise ConfigError(f"{source}: 'token_groups' must be a non-empty list of distinct names")

    sc = _require(raw, "scenario", source)
    _known_keys(sc, "scenario", f"{source} scenario", strict)
    values = _list(sc, "values", f"{source} scenario")
    # Unquoted yes/no/on/off/true/null are YAML booleans/null: str() would make them 'True', 'False', 'None'.
    odd = [v for v in values if isinstance(v, bool) or v is None]
    if strict and odd:
        raise ConfigError(f"{source}: scenario.values {odd} are YAML booleans or null, not names; quote them "
                          f"(e.g. 'yes', 'no', 'on')")
    scenario = ScenarioSpec(column=str(_require(sc, "column", f"{source} scenario")), values=tuple(map(str, values)),
                            membership_column=sc.get("membership_column"),
                            separator=_separator(sc, f"{source} scenario", strict), dtype=sc.get("dtype", "string"))
    if scenario.dtype not in ("string", "int"):
        raise ConfigError(f"{source}: scenario.dtype must be 'string' or 'int'")
    if not scenario.values or len(set(scenario.values)) != len(scenario.values):
        raise ConfigError(f"{source}: 'scenario.values' must list at least one distinct scenario value")
    if strict and scenario.dtype == "int":  # a cell matches a value by its canonical text: 7, never 07 or +7
        bad = [v for v in scenario.values if not is_plain_int(v)]
        if bad:
            raise ConfigError(f"{source}: scenario.dtype is int, so scenario.values must be integers written "
                              f"plainly (7, not 07, +7 or home); got {bad}")

    tasks = []
    for i, t in enumerate(_list(raw, "tasks", source)):
        _known_keys(t, "task", f"{source} tasks[{i}]", strict)
        tasks.append(TaskSpec(name=str(_require(t, "name", f"{source} tasks[{i}]")),
                              label=str(t.get("label", t.get("name")))))
    if not tasks:
        raise ConfigError(f"{source}: 'tasks' must declare at least one task")
    if len({t.name for t in tasks}) != len(tasks):
        raise ConfigError(f"{source}: task names must be distinct")
    if strict and len({t.label for t in tasks}) != len(tasks):
        raise ConfigError(f"{source}: tasks must read distinct label columns; got {[t.label for t in tasks]}")

    features = []
    for i, f in enumerate(_list(raw, "features", source)):
        where = f"{source} features[{i}]"
        _known_keys(f, "feature", where, strict)
        name = str(_require(f, "name", where))
        kind = _require(f, "kind", f"{where} ({name})")
        if kind not in FEATURE_KINDS:
            raise ConfigError(f"{where} ({name}): kind '{kind}' is not one of {FEATURE_KINDS}")
        group = _require(f, "group", f"{where} ({name})")
        if group not in groups:
            raise ConfigError(f"{where} ({name}): group '{group}' is not in token_groups {list(groups)}")
        important = tuple(_list(f, "important_for", f"{where} ({name})", default=()))  # "scenario" was 's', 'c', ...
        for d in important:
            if d not in DOMAINS:
                raise ConfigError(f"{where} ({name}): important_for '{d}' must be one of {DOMAINS}")
        if important and kind != "categorical":
            raise ConfigError(f"{where} ({name}): only categorical features can be important_for domain tokens")
        max_len = _int_field(f, "max_len", 1, f"{where} ({name})")
        if kind in ("multi_hot", "sequence") and max_len < 1:
            raise ConfigError(f"{where} ({name}): max_len must be >= 1")
        dtype = f.get("dtype", _default_dtype(kind))
        if dtype not in DTYPES or (kind == "numeric") != (dtype == "float"):
            raise ConfigError(f"{where} ({name}): dtype '{dtype}' does not fit kind '{kind}' "
                              f"(numeric features are float; id features are string or int)")
        if kind in ("multi_hot", "sequence") and dtype != "string":
            raise ConfigError(f"{where} ({name}): dtype '{dtype}' does not fit kind '{kind}': its values are ids "
                              f"joined with the separator (\"3|7\"), which is text; declare it `dtype: string`")
        min_frequency = _int_field(f, "min_frequency", 1, f"{where} ({name})", least=1 if strict else None)
        features.append(FeatureSpec(name=name, kind=kind, group=group, important_for=important,
                                    min_frequency=min_frequency, max_len=max_len,
                                    separator=_separator(f, f"{where} ({name})", strict),
                                    shares_vocab_with=f.get("shares_vocab_with"), dtype=dtype,
                                    hash_buckets=_hash_buckets(f, kind, min_frequency, f"{where} ({name})"),
                                    prior_for=_prior_for(f, kind, f"{where} ({name})")))

    cfg = FeatureConfig(name=str(_require(raw, "name", source)),
                        version=_int_field(raw, "version", 1, source),
                        token_groups=groups, features=tuple(features), scenario=scenario, tasks=tuple(tasks),
                        user_column=raw.get("user_column"), query_column=raw.get("query_column"),
                        time_column=raw.get("time_column"),
                        embedding_dim=_int_field(raw, "embedding_dim", 16, source, least=1 if strict else None),
                        slice_columns=tuple(str(c) for c in _list(raw, "slice_columns", source, default=())))
    validate(cfg, source)
    return cfg


def _hashing(spec: FeatureSpec) -> str:
    return f"hash_buckets: {spec.hash_buckets}" if spec.is_hashed else "no hash_buckets"


def validate(cfg: FeatureConfig, source: str = "<config>") -> None:
    names = [f.name for f in cfg.features]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{source}: feature names must be distinct; repeated: {sorted(dup)}")
    labels = set(cfg.label_columns)
    # Labels must never reach the feature tokens: reject any config that would feed one to the model.
    leaked = labels.intersection(cfg.raw_feature_columns)
    if leaked:
        raise ConfigError(f"{source}: label column(s) {sorted(leaked)} are also declared as features or as the "
                          f"scenario/membership column; remove them from 'features' (labels never feed the model)")
    unknown = [c for c in cfg.slice_columns if c not in cfg.required_columns or c in labels]
    if unknown:
        raise ConfigError(f"{source}: slice_columns {unknown} must be feature, scenario, user, query or time columns "
                          f"of this config (labels cannot slice)")
    by_name = {f.name: f for f in cfg.features}
    for f in cfg.features:
        if f.shares_vocab_with:
            owner = by_name.get(f.shares_vocab_with)
            if owner is None or owner.kind != "categorical":
                raise ConfigError(f"{source}: feature '{f.name}' shares_vocab_with '{f.shares_vocab_with}', "
                                  f"which must be a categorical feature of this config")
            if f.kind not in ("sequence", "multi_hot"):
                raise ConfigError(f"{source}: feature '{f.name}': shares_vocab_with is only for sequence/multi_hot")
            if f.hash_buckets != owner.hash_buckets:
                raise ConfigError(f"{source}: feature '{f.name}' ({_hashing(f)}) shares_vocab_with '{owner.name}' "
                                  f"({_hashing(owner)}): features sharing one embedding table must map ids the same "
                                  f"way; give both the same hash_buckets, or neither")
    used = {f.group for f in cfg.features}
    empty = [g for g in cfg.token_groups if g not in used]
    if empty:
        raise ConfigError(f"{source}: token group(s) {empty} have no feature; every group becomes a token and needs "
                          f"at least one feature (or remove the group)")
    for domain, known in (("scenario", cfg.scenario_names), ("task", cfg.task_names)):
        for f in cfg.features:
            if f.prior_for and f.prior_for[0] == domain and f.prior_for[1] not in known:
                raise ConfigError(f"{source}: feature '{f.name}' is a prior_for {domain} '{f.prior_for[1]}', which "
                                  f"is not one of this config's {domain}s {known}")
        per = cfg.domain_priors(domain)
        if per and len({len(p) for p in per}) > 1:
            counts = {n: len(p) for n, p in zip(known, per)}
            raise ConfigError(f"{source}: every {domain} needs the same number of priors (prior_for), in the same "
                              f"order; got {counts}: add the missing ones or remove the extra ones")
    for domain in DOMAINS:
        if not cfg.important_features(domain):
            raise ConfigError(f"{source}: no feature is important_for '{domain}'; domain tokens must be "
                              f"sample-dependent, so mark at least one categorical feature (e.g. user_id)")


def _refuse_priors(cfg: FeatureConfig, what: str) -> None:
    declared = [f.name for f in cfg.features if f.prior_for]
    if declared:
        raise ConfigError(f"cannot onboard {what}: this config declares priors of the domain tokens (prior_for: "
                          f"{', '.join(declared)}), which an onboarded token would not have; retrain on a config "
                          f"that declares the new token's priors too")


def with_scenario(cfg: FeatureConfig, name: str) -> FeatureConfig:
    """`cfg` with scenario `name` appended after the existing ones (onboarding a scenario; indices of the existing
    scenarios unchanged)."""
    _refuse_priors(cfg, f"scenario '{name}'")
    raw = cfg.to_dict()
    raw["scenario"] = {**raw["scenario"], "values": [*raw["scenario"]["values"], name]}
    return from_dict(raw, "onboarded feature config")


def with_task(cfg: FeatureConfig, name: str, label: str) -> FeatureConfig:
    """`cfg` with task `name` (0/1 label column `label`) appended after the existing ones (onboarding a task)."""
    _refuse_priors(cfg, f"task '{name}'")
    raw = cfg.to_dict()
    raw["tasks"] = [*raw["tasks"], {"name": name, "label": label}]
    return from_dict(raw, "onboarded feature config")


def load(path) -> FeatureConfig:
    """Load `features.yaml` from a file or from a schema directory that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{path}: feature config not found; a schema directory holds {CONFIG_FILE} and "
                          f"schema.pbtxt (README, 'Datasets and the feature config'; `mdl-tf schema export --schema "
                          f"DIR` writes schema.pbtxt from DIR/features.yaml)")
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return from_dict(raw, str(path), strict=True)


def dump(cfg: FeatureConfig, path) -> None:
    from mdl_tf.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
