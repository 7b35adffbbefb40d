import copy
from pathlib import Path

import pytest

from mdl_tf import config as cfgmod
from mdl_tf.data import DATASETS, synthetic
from mdl_tf.export import raw_feature_spec
from mdl_tf.schema import schema_text

REPO = Path(__file__).resolve().parent.parent


def _raw():
    return copy.deepcopy(synthetic.FEATURES_YAML)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_committed_schemas_match_the_dataset_definitions(name):
    cfg = DATASETS[name].feature_config()
    committed = REPO / "schemas" / name
    assert cfgmod.load(committed) == cfg, f"run `mdl-tf schema export --dataset {name}`"
    assert (committed / "schema.pbtxt").read_text() == schema_text(cfg)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_labels_never_become_model_inputs(name):
    cfg = DATASETS[name].feature_config()
    labels = set(cfg.label_columns)
    assert not labels & set(cfg.raw_feature_columns)
    assert not labels & set(raw_feature_spec(cfg))
    assert 'not_in_environment: "SERVING"' in schema_text(cfg)


def test_a_label_declared_as_feature_is_rejected():
    raw = _raw()
    raw["features"].append({"name": "click", "kind": "numeric", "group": "user"})
    with pytest.raises(cfgmod.ConfigError, match=r"label column\(s\) \['click'\].*remove them"):
        cfgmod.from_dict(raw, "t.yaml")


def test_unknown_group_and_kind_name_the_feature():
    raw = _raw()
    raw["features"][0]["group"] = "nowhere"
    with pytest.raises(cfgmod.ConfigError, match=r"features\[0\] \(user_id\): group 'nowhere'"):
        cfgmod.from_dict(raw, "t.yaml")
    raw = _raw()
    raw["features"][1]["kind"] = "float"
    with pytest.raises(cfgmod.ConfigError, match=r"user_age\): kind 'float'"):
        cfgmod.from_dict(raw, "t.yaml")


@pytest.mark.parametrize("edit, message", [
    # a misspelt key once loaded and did nothing
    (lambda r: r["features"][3].update(hash_bucket=4096),
     r"features\[3\]: unknown key\(s\) \['hash_bucket'\] \(did you mean 'hash_buckets' for 'hash_bucket'\?\); the "
     r"keys here are name, kind, group, "),
    (lambda r: r.update(embeding_dim=8), r"t.yaml: unknown key\(s\) \['embeding_dim'\] \(did you mean 'embedding_dim'"),
    (lambda r: r["scenario"].update(colum="x"), r"t.yaml scenario: unknown key\(s\) \['colum'\] \(did you mean 'column'"),
    (lambda r: r["tasks"][0].update(weight=2), r"tasks\[0\]: unknown key\(s\) \['weight'\]; the keys here are name, label$"),
    (lambda r: r.update(embedding_dim=0), r"'embedding_dim' must be at least 1, got 0"),
    (lambda r: r["features"][0].update(min_frequency=0), r"\(user_id\): 'min_frequency' must be at least 1, got 0"),
    (lambda r: r["features"][6].update(separator=""), r"features\[6\] \(item_tags\): 'separator' must be a non-empty"),
    (lambda r: r["scenario"].update(separator=""), r"scenario: 'separator' must be a non-empty text"),
    # a bare string was checked letter by letter ("important_for 's' must be one of ...")
    (lambda r: r["features"][0].update(important_for="scenario"), r"'important_for' must be a list, e.g. \[scenario\]"),
    (lambda r: r["tasks"][1].update(label="click"), r"tasks must read distinct label columns; got \['click', 'click'\]"),
    (lambda r: r["scenario"].update(values=["home", False]), r"scenario.values \[False\] are YAML booleans or null"),
    (lambda r: r["scenario"].update(dtype="int", values=[1, "07", "+2", "home", "--7", "²", "-3"]),
     r"scenario.values must be integers written plainly \(7, not 07, \+7 or home\); got \['07', '\+2', 'home', "
     r"'--7', '²'\]"),
    (lambda r: r["scenario"].update(values=[True, "True"]), r"scenario.values \[True\] are YAML booleans"),
])
def test_config_mistakes_are_refused_at_load_with_the_key_and_the_fix(edit, message):
    raw = _raw()
    assert raw["features"][3]["name"] == "item_id" and raw["features"][6]["name"] == "item_tags"
    edit(raw)
    with pytest.raises(cfgmod.ConfigError, match=message):
        cfgmod.from_dict(raw, "t.yaml", strict=True)


def test_a_stored_config_of_an_older_version_still_loads(tmp_path):
    """The strict checks are for a features.yaml a person writes (`load`); a config an older version stored in a
    SavedModel or a pipeline spec (`to_dict` wrote min_frequency 0, which acted as 1) still loads, so that model still
    serves, onboards and warm-starts."""
    import yaml

    raw = _raw()
    raw["features"][0]["min_frequency"] = 0
    assert cfgmod.from_dict(raw, "metadata").feature("user_id").min_frequency == 0
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(cfgmod.ConfigError, match=r"'min_frequency' must be at least 1, got 0"):
        cfgmod.load(tmp_path)


@pytest.mark.parametrize("key, value", [("token_groups", "user"), ("slice_columns", "scenario"), ("tasks", "click")])
def test_a_text_where_a_list_belongs_is_refused(key, value):
    raw = _raw()
    raw[key] = value
    with pytest.raises(cfgmod.ConfigError, match=rf"'{key}' must be a list, e.g. \[{value}\]"):
        cfgmod.from_dict(raw, "t.yaml")
    raw = _raw()
    raw["scenario"]["values"] = "home"  # once 4 scenarios: h, o, m, e
    with pytest.raises(cfgmod.ConfigError, match=r"scenario: 'values' must be a list, e.g. \[home\]"):
        cfgmod.from_dict(raw, "t.yaml")


def test_domain_tokens_need_an_important_feature():
    raw = _raw()
    for f in raw["features"]:
        f.pop("important_for", None)
    with pytest.raises(cfgmod.ConfigError, match="no feature is important_for 'scenario'"):
        cfgmod.from_dict(raw, "t.yaml")


def test_missing_config_file_says_what_a_schema_dir_holds(tmp_path):
    with pytest.raises(cfgmod.ConfigError, match="features.yaml and schema.pbtxt"):
        cfgmod.load(tmp_path)


def test_round_trip_through_yaml(tmp_path):
    cfg = synthetic.feature_config()
    cfgmod.dump(cfg, tmp_path / "features.yaml")
    assert cfgmod.load(tmp_path) == cfg


def test_schema_export_offers_every_dataset():
    from mdl_tf.cli import build_parser

    parser = build_parser()
    for name in DATASETS:
        assert parser.parse_args(["schema", "export", "--dataset", name]).dataset == name


def _with_priors(raw, per_scenario=1, tasks=("click", "purchase")):
    """The synthetic config plus numeric priors: `per_scenario` per scenario, one per task."""
    for s in synthetic.SCENARIOS:
        raw["features"] += [{"name": f"prior_{s}_{i}", "kind": "numeric", "group": "item",
                             "prior_for": {"scenario": s}} for i in range(per_scenario)]
    raw["features"] += [{"name": f"prior_{t}", "kind": "numeric", "group": "item", "prior_for": {"task": t}}
                        for t in tasks]
    return raw


def test_priors_are_listed_per_token_in_order_and_round_trip(tmp_path):
    cfg = cfgmod.from_dict(_with_priors(_raw(), per_scenario=2), "t.yaml")
    assert cfg.domain_priors("scenario") == [[f"prior_{s}_0", f"prior_{s}_1"] for s in synthetic.SCENARIOS]
    assert cfg.domain_priors("task") == [["prior_click"], ["prior_purchase"]]
    assert synthetic.feature_config().domain_priors("scenario") == []
    cfgmod.dump(cfg, tmp_path / "features.yaml")
    assert cfgmod.load(tmp_path) == cfg


def test_bad_priors_are_named_with_the_fix():
    raw = _with_priors(_raw())
    raw["features"][-1]["prior_for"] = {"task": "like"}
    with pytest.raises(cfgmod.ConfigError, match=r"'prior_purchase' is a prior_for task 'like', which is not one of"):
        cfgmod.from_dict(raw, "t.yaml")
    raw = _with_priors(_raw(), tasks=("click",))
    with pytest.raises(cfgmod.ConfigError, match=r"every task needs the same number of priors.*'purchase': 0"):
        cfgmod.from_dict(raw, "t.yaml")
    raw = _raw()
    raw["features"][0]["prior_for"] = {"scenario": "home"}
    with pytest.raises(cfgmod.ConfigError, match=r"\(user_id\): only numeric features can be priors"):
        cfgmod.from_dict(raw, "t.yaml")
    raw = _raw()
    raw["features"][1]["prior_for"] = "home"
    with pytest.raises(cfgmod.ConfigError, match=r"\(user_age\): prior_for must name one scenario or one task"):
        cfgmod.from_dict(raw, "t.yaml")
