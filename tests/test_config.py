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
