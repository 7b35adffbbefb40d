import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ALICCP_SRC
from mdl_tf.data import aliccp, movielens
from mdl_tf.data.io import DataError, read_split, split_path


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml")
    movielens.write(out, src=movielens.fetch())
    return out


def test_movielens_splits_columns_and_time_order(ml_dir):
    cfg = movielens.feature_config()
    frames = {s: read_split(ml_dir, s, cfg) for s in ("train", "eval", "test")}
    assert sum(len(f) for f in frames.values()) == 100_000
    assert [len(frames[s]) for s in ("train", "eval", "test")] == [80_000, 10_000, 10_000]
    assert frames["train"].ts.max() <= frames["eval"].ts.min() <= frames["eval"].ts.max() <= frames["test"].ts.min()
    for f in frames.values():
        assert set(cfg.required_columns) <= set(f.columns)
        assert set(f.age_group) <= set(movielens.AGE_GROUPS)
        assert ((f.like == 1) <= (f.click == 1)).all()
    assert not set(cfg.label_columns) & set(cfg.raw_feature_columns)
    genres = frames["train"].genres.str.split("|")
    assert genres.map(len).max() <= 6 and (genres.map(len) >= 1).mean() > 0.99


def test_movielens_history_never_sees_the_future(ml_dir):
    cfg = movielens.feature_config()
    frame = pd.concat([read_split(ml_dir, s, cfg) for s in ("train", "eval", "test")], ignore_index=True)
    first_seen = {}
    for u, it, t in zip(frame.user_id, frame.item_id, frame.ts):
        first_seen.setdefault((u, it), t)
    sample = frame.sample(2000, random_state=0)
    for u, t, hist in zip(sample.user_id, sample.ts, sample.hist_items):
        for it in filter(None, hist.split("|")):
            assert first_seen[(u, it)] < t


def test_movielens_missing_file_is_named(tmp_path):
    src = movielens.fetch()
    for name in ("ml-100k.inter", "ml-100k.item"):
        shutil.copy(src / name, tmp_path / name)
    with pytest.raises(DataError, match=r"ml-100k.user: file not found"):
        movielens.write(tmp_path / "out", src=tmp_path)


def test_aliccp_maps_the_real_sample(tmp_path):
    info = aliccp.write(tmp_path, ALICCP_SRC)
    assert info["rows"] == {"train": 100, "eval": 25, "test": 25}
    cfg = aliccp.feature_config()
    train = read_split(tmp_path, "train", cfg)
    assert set(train.f301) == {"1", "2", "3"}
    assert train.click.sum() == 7 and train.purchase.sum() == 1
    assert "click" not in cfg.raw_feature_columns and "purchase" not in cfg.raw_feature_columns


def _copy_ali(tmp_path, edit):
    src = tmp_path / "src"
    src.mkdir()
    for name in (aliccp.TRAIN_FILE, aliccp.TEST_FILE):
        shutil.copy(f"{ALICCP_SRC}/{name}", src / name)
    frame = pd.read_csv(src / aliccp.TRAIN_FILE, dtype=str)
    edit(frame).to_csv(src / aliccp.TRAIN_FILE, index=False)
    return src


def test_aliccp_bad_inputs_name_file_row_and_column(tmp_path):
    with pytest.raises(DataError, match=r"ali_ccp_train_sample.csv: file not found"):
        aliccp.write(tmp_path / "o", tmp_path)
    src = _copy_ali(tmp_path, lambda f: f.drop(columns=["purchase"]))
    with pytest.raises(DataError, match=r"ali_ccp_train_sample.csv: label column\(s\) \['purchase'\] missing"):
        aliccp.write(tmp_path / "o", src)

    def corrupt(f):
        f.loc[4, "D508"] = "abc"
        return f

    shutil.rmtree(tmp_path / "src")
    src = _copy_ali(tmp_path, corrupt)
    with pytest.raises(DataError, match=r"ali_ccp_train_sample.csv: row 5 \(line 6\), column 'D508': value 'abc'"):
        aliccp.write(tmp_path / "o", src)
    shutil.rmtree(tmp_path / "src")
    src = _copy_ali(tmp_path, lambda f: f.drop(columns=["301"]))
    with pytest.raises(DataError, match=r"scenario column\(s\) \['301'\] missing"):
        aliccp.write(tmp_path / "o", src)


def test_read_split_errors_name_file_row_and_column(synth_dir, synth_cfg, tmp_path):
    frame = pd.read_csv(split_path(synth_dir, "train"), dtype=str, keep_default_na=False)
    bad = frame.copy()
    bad.loc[2, "item_price"] = "cheap"
    (tmp_path / "train").mkdir()
    bad.to_csv(tmp_path / "train" / "data.csv", index=False)
    with pytest.raises(DataError, match=r"train/data.csv: row 3 \(line 4\), column 'item_price': value 'cheap'"):
        read_split(tmp_path, "train", synth_cfg)
    frame.drop(columns=["click"]).to_csv(tmp_path / "train" / "data.csv", index=False)
    with pytest.raises(DataError, match=r"column\(s\) \['click'\] declared in the feature config are missing"):
        read_split(tmp_path, "train", synth_cfg)
    nolabel = frame.copy()
    nolabel["purchase"] = ""
    nolabel.to_csv(tmp_path / "train" / "data.csv", index=False)
    with pytest.raises(DataError, match=r"column 'purchase': every label is missing"):
        read_split(tmp_path, "train", synth_cfg)
    two = frame.copy()
    two.loc[0, "click"] = "2"
    two.to_csv(tmp_path / "train" / "data.csv", index=False)
    with pytest.raises(DataError, match=r"row 1 \(line 2\), column 'click': value '2' is not 0 or 1"):
        read_split(tmp_path, "train", synth_cfg)
    with pytest.raises(DataError, match=r"/eval: no CSV file; expected <data dir>/eval/\*\.csv"):
        read_split(tmp_path, "eval", synth_cfg)


def test_a_split_is_every_csv_file_of_its_folder_with_one_header_and_no_byte_order_mark(synth_dir, synth_cfg,
                                                                                         tmp_path):
    """`mdl-tf train` reads a split as the pipeline's CsvExampleGen does (train/*, in name order), and refuses what
    CsvExampleGen would misread: files of one split with different headers, and a byte-order mark, which pandas skips
    but CsvExampleGen keeps in the first column's name (that column, a label here, then silently vanished)."""
    frame = pd.read_csv(split_path(synth_dir, "train"), dtype=str, keep_default_na=False)
    (tmp_path / "train").mkdir()
    frame.iloc[:700].to_csv(tmp_path / "train" / "part-0.csv", index=False)
    frame.iloc[700:].to_csv(tmp_path / "train" / "part-1.csv", index=False)
    (tmp_path / "train" / "notes.txt").write_text("not data")
    whole, parts = read_split(synth_dir, "train", synth_cfg), read_split(tmp_path, "train", synth_cfg)
    pd.testing.assert_frame_equal(parts, whole)
    frame.iloc[700:, ::-1].to_csv(tmp_path / "train" / "part-1.csv", index=False)
    with pytest.raises(DataError, match=r"part-1.csv: header differs from part-0.csv's"):
        read_split(tmp_path, "train", synth_cfg)
    (tmp_path / "train" / "part-1.csv").unlink()
    first = tmp_path / "train" / "part-0.csv"
    text = first.read_text()
    first.write_text("\ufeff" + text, encoding="utf-8")  # what Excel's "CSV UTF-8" and encoding="utf-8-sig" write
    with pytest.raises(DataError, match=r"part-0.csv: starts with a UTF-8 byte-order mark .* lose it\. Save the file "
                                        r"without it"):
        read_split(tmp_path, "train", synth_cfg)
    first.write_text(text, encoding="utf-8")
    assert len(read_split(tmp_path, "train", synth_cfg)) == 700
    second = tmp_path / "train" / "part-1.csv"  # a second file from Excel: the mark is named, not "header differs"
    second.write_text("\ufeff" + frame.iloc[700:].to_csv(index=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"part-1.csv: starts with a UTF-8 byte-order mark"):
        read_split(tmp_path, "train", synth_cfg)
    # Labels are a split's: a file from before a task existed is fine when another file labels it; none is not.
    frame.iloc[700:].assign(purchase="").to_csv(second, index=False)
    assert read_split(tmp_path, "train", synth_cfg)["purchase"].iloc[700:].isna().all()
    frame.iloc[:700].assign(purchase="").to_csv(first, index=False)
    with pytest.raises(DataError, match=r"/train: column 'purchase': every label is missing; task 'purchase' cannot"):
        read_split(tmp_path, "train", synth_cfg)


def test_aliccp_ids_stay_exact_and_labels_are_0_or_1(tmp_path):
    def big_id(f):
        f.loc[0, "101"] = str(2 ** 53 + 1)  # a float64 would make it 2**53
        return f

    src = _copy_ali(tmp_path, big_id)
    aliccp.write(tmp_path / "o", src)
    assert read_split(tmp_path / "o", "train", aliccp.feature_config())["f101"].iloc[0] == str(2 ** 53 + 1)
    shutil.rmtree(tmp_path / "src")
    src = _copy_ali(tmp_path, lambda f: f.assign(click=f["click"].str.replace("1", "1.0")))
    with pytest.raises(DataError, match=r"ali_ccp_train_sample.csv: row \d+ \(line \d+\), column 'click': "
                                        r"value '1.0' is 0 or 1 written as a decimal"):
        aliccp.write(tmp_path / "o2", src)


def test_training_rows_of_an_undeclared_scenario_are_warned_about(synth_dir, synth_cfg, tmp_path, caplog):
    """A scenario value features.yaml does not list trains the global token only: the pipeline's check and `mdl-tf
    train` say so, with the value and the row count (it was silent)."""
    from tfx_pipeline import preflight

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    frame = pd.read_csv(split_path(data, "train"), dtype=str, keep_default_na=False)
    frame.loc[:9, "scenario"] = "promo"
    frame.to_csv(split_path(data, "train"), index=False)
    with caplog.at_level("WARNING", logger="mdl_tf.data.io"):
        preflight.check_input(data, synth_cfg)
    assert len(caplog.records) == 1  # the train split only
    assert (f"{split_path(data, 'train')}: 10 of {len(frame):,} rows (0.2%) have a scenario that features.yaml's "
            f"scenario.values ['home', 'feed', 'search'] does not list ('promo': 10); they train the global token "
            f"only") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mdl_tf.data.io"):
        preflight.check_input(synth_dir, synth_cfg)
    assert "scenario.values" not in caplog.text
