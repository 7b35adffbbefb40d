"""The value contract (mdl_tf.values) at the file doors: the rules per kind, the CSV loaders, the pipeline's pre-run
check and CsvExampleGen's own parsing, and the command line's one-line errors. Serving doors: test_serving_values.py."""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdl_tf import values
from mdl_tf.cli import main
from mdl_tf.data import synthetic
from mdl_tf.data.io import DataError, read_csv_checked, split_path
from mdl_tf.errors import UnknownFeatures
from mdl_tf.schema import build_schema
from tests.conftest import SHARED, fuzz_examples
from tfx_pipeline import preflight

CASES = Path(SHARED) / "cases"
FLOAT_LABELS = CASES / "float-labels-transform-crash" / "data"
CFG = synthetic.feature_config()
RULES = values.column_rules(CFG)


def _refusal(rule, value) -> str:
    with pytest.raises(values.InvalidValue) as err:
        values.check_value(rule, value)
    assert err.value.column == rule.column
    return err.value.reason


# -- the rules, kind by kind ------------------------------------------------------------------------------------------
def test_numeric_accepts_numbers_and_their_text_and_refuses_the_rest():
    rule = RULES["item_price"]
    for given_value, canonical in [(3, 3.0), (2.5, 2.5), ("2.5", 2.5), (" -1e3 ", -1000.0), (".5", 0.5),
                                   (np.float32(1.5), 1.5), (np.int64(4), 4.0)]:
        assert values.check_value(rule, given_value) == canonical
    for missing in (None, "", float("nan"), pd.NA):
        assert values.check_value(rule, missing) is None
    for bad, needle in [("abc", "is not a number"), ("nan", "is not a number"), ("inf", "is not a number"),
                        (float("inf"), "not a finite float32"), (1e39, "not a finite float32"),
                        (10 ** 400, "not a finite float32"), ("  ", "is blank"), (True, "is a boolean"),
                        ([1.0], "is a list"), ({"v": 1}, "is an object"), ("1_000", "is not a number"),
                        ("١٢", "is not a number"), (str(2 ** 64), "beyond int64")]:
        reason = _refusal(rule, bad)
        assert needle in reason and "expected a finite number" in reason, (bad, reason)


def test_int_ids_stay_exact_and_anything_that_is_not_an_int64_is_refused():
    rule = values.ColumnRule("user_id", "id", "int")
    for given_value, canonical in [(2 ** 53 + 1, 2 ** 53 + 1), ("9007199254740993", 9007199254740993),
                                   (" +007 ", 7), (2 ** 63 - 1, 2 ** 63 - 1), (-2 ** 63, -2 ** 63),
                                   (np.uint64(2 ** 63 - 1), 2 ** 63 - 1)]:
        assert values.check_value(rule, given_value) == canonical
    for bad, needle in [(2 ** 63, "out of int64 range"), (str(-2 ** 63 - 1), "out of int64 range"),
                        (9.007199254740993e15, "is a float"), ("3.0", "is not an integer"),
                        ("1e3", "is not an integer"), ("u1", "is not an integer"), (False, "is a boolean"),
                        ([5], "is a list"), ("\ud800", "not valid UTF-8")]:
        reason = _refusal(rule, bad)
        assert needle in reason and "int64" in reason, (bad, reason)


def test_string_ids_and_multi_valued_features():
    rule, tags = RULES["item_id"], RULES["item_tags"]
    assert values.check_value(rule, "i9") == "i9" and values.check_value(rule, 12) == "12"
    assert values.check_value(rule, "a|b") == "a|b"  # one id that happens to hold the separator
    assert values.check_value(rule, "ünï 🙂") == "ünï 🙂" and values.check_value(rule, b"i9") == "i9"
    for bad, needle in [(1.5, "is a float"), (["i1"], "is a list"), (b"\xff", "not UTF-8"), (True, "boolean")]:
        assert needle in _refusal(rule, bad), bad
    assert values.check_value(tags, ["t38", "t8"]) == values.check_value(tags, "t38|t8") == "t38|t8"
    assert values.check_value(tags, ("t1", 7)) == "t1|7" and values.check_value(tags, "|t1||t2|") == "t1|t2"
    assert values.check_value(tags, []) is None and values.check_value(tags, "|") is None
    for bad, needle in [(["t1", "a|b"], "containing the separator '|'"), (["t1", ""], "empty or boolean element 1"),
                        ([None], "element 0"), ([["t1"]], "is a list"), ([1.5], "is a float"),
                        ({"t": 1}, "is an object")]:
        reason = _refusal(tags, bad)
        assert needle in reason and "joined with '|'" in reason, (bad, reason)


def test_labels_scenario_and_time():
    label, scenario = RULES["click"], RULES["scenario"]
    assert [values.check_value(label, v) for v in ("0", " 1", 1, np.int64(0), "", None)] == [0, 1, 1, 0, None, None]
    for bad in ("1.0", 1.0, "2", -1, "true", True, "yes"):
        reason = _refusal(label, bad)
        assert "0 or 1 written as an integer" in reason and "astype('Int64')" in reason, bad
        # The right label in the wrong form says so; anything else is simply not 0 or 1.
        decimal = isinstance(bad, float) or bad == "1.0"
        assert reason.startswith("is 0 or 1 written as a decimal;" if decimal else "is "), bad
        assert ("written as a decimal" in reason) == decimal, bad
    assert _refusal(label, "0.").startswith("is 0 or 1 written as a decimal;")
    assert _refusal(label, "0.5").startswith("is not 0 or 1;")
    assert "is required in every row" in _refusal(scenario, None)
    assert "is required in every row" in _refusal(scenario, "")
    assert values.check_value(RULES["ts"], "1700000853") == 1700000853
    assert "is not an integer" in _refusal(RULES["ts"], "1.5")


def test_a_row_with_an_unknown_feature_is_refused_with_the_closest_name():
    cfg = CFG
    with pytest.raises(DataError, match=r"^rows.jsonl: line 2: unknown feature\(s\) \['itme_id'\] \(did you mean "
                                        r"'item_id'\?\); the model reads \['user_id', "):
        values.check_row({"itme_id": "i1"}, cfg, "rows.jsonl: line 2")
    with pytest.raises(UnknownFeatures) as err:
        values.check_row({"itme_id": "i1", "usr_id": "u1", "request_id": "r"}, cfg, "rows.jsonl: line 2")
    assert str(err.value).startswith("rows.jsonl: line 2: unknown feature(s) ['itme_id', 'request_id', 'usr_id'] "
                                     "(did you mean 'item_id' for 'itme_id', 'user_id' for 'usr_id'?); the model reads")
    assert err.value.names == ["itme_id", "request_id", "usr_id"]
    assert err.value.guesses == {"itme_id": "item_id", "usr_id": "user_id"}
    with pytest.raises(DataError) as err:  # the row already has item_id: no guess of a feature it holds
        values.check_row({"item_id": "i1", "item_idd": "i1"}, cfg, "request 0")
    assert "unknown feature(s) ['item_idd']" in str(err.value) and "did you mean" not in str(err.value)
    with pytest.raises(DataError) as err:  # nothing close: no guess
        values.check_row({"zzz": "1", "user_id": "u1"}, cfg, "request 0")
    assert "unknown feature(s) ['zzz']; the model reads" in str(err.value) and "did you mean" not in str(err.value)
    # Short and upper-case names (Ali-CCP's '205', 'D508'): one slip of a 3- or 4-character name is still a guess.
    assert values.closest_features(["d508", "D5O8", "2O5", "item_idd"], ["D508", "205", "item_price"], {}) == \
        {"d508": "D508", "D5O8": "D508", "2O5": "205"}
    kept = values.check_row({"zzz": "1", "scenario": "feed"}, cfg, "x", ignore_unknown=True)  # a table's extra column
    assert "zzz" not in kept and kept["scenario"] == "feed" and kept["item_id"] is None


def test_int_dtype_multi_valued_features_are_refused_by_the_config():
    from mdl_tf.config import ConfigError, from_dict

    raw = {**synthetic.FEATURES_YAML, "features": [
        {**f, "dtype": "int"} if f["name"] == "item_tags" else f for f in synthetic.FEATURES_YAML["features"]]}
    with pytest.raises(ConfigError, match=r"item_tags.*declare it `dtype: string`"):
        from_dict(raw)


# -- property: one rule, a fixed point, never an unexpected exception -------------------------------------------------
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70) | st.floats()
    | st.text() | st.sampled_from(["", " ", "1", "-0", "1.0", "1e5", "nan", "inf", "a|b", "|", str(2 ** 63)]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=5)


FUZZ_RULES = {**RULES, "int_id": values.ColumnRule("int_id", "id", "int"),
              "int_scenario": values.ColumnRule("int_scenario", "id", "int", required=True)}


@settings(max_examples=fuzz_examples(300))
@given(column=st.sampled_from(sorted(FUZZ_RULES)), value=ANY_VALUE)
def test_every_value_is_accepted_in_canonical_form_or_refused_by_name(column, value):
    rule = FUZZ_RULES[column]
    try:
        canonical = values.check_value(rule, value)
    except values.InvalidValue as e:
        assert e.column == column and rule.expects in e.reason, e.reason
        return
    if canonical is None:
        return
    assert values.check_value(rule, canonical) == canonical  # canonical is a fixed point
    expected_type = {"numeric": float, "label": int, "time": int}.get(rule.kind, int if rule.dtype == "int" else str)
    assert type(canonical) is expected_type
    if isinstance(canonical, float):
        assert math.isfinite(canonical) and abs(canonical) <= values.FLOAT32_MAX
    if isinstance(canonical, str):
        canonical.encode("utf-8")
        assert str(canonical) == values.check_value(rule, str(canonical))  # the CSV text form reads back the same


@settings(max_examples=fuzz_examples(300))
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
       | st.from_regex(r"\s?[+-]?[0-9_]{0,25}(\.[0-9]*)?([eE][+-]?[0-9]{1,3})?\s?", fullmatch=True))
def test_csv_type_inference_is_csvexamplegens(text):
    from tfx_bsl.coders import csv_decoder

    theirs = csv_decoder._InferValueType(text.encode())  # the function CsvExampleGen runs on every cell
    names = {csv_decoder.ColumnType.UNKNOWN: None, csv_decoder.ColumnType.INT: "INT",
             csv_decoder.ColumnType.FLOAT: "FLOAT", csv_decoder.ColumnType.STRING: "STRING"}
    assert values.csv_cell_type(text) == names[theirs]


# -- CSV files: what the loaders accept is exactly what CsvExampleGen + the schema can parse ---------------------------
def _csv_example_gen(path: Path, cfg):
    """The pipeline's own parsing of one CSV file, without Beam: CsvExampleGen's line parser, type inference and
    tf.Example conversion, then tfx_bsl's decoder against schema.pbtxt (where float labels failed in the Transform)."""
    from tfx.components.example_gen.csv_example_gen.executor import _ParsedCsvToTfExample
    from tfx_bsl.coders import csv_decoder, example_coder

    parse = csv_decoder.ParseCSVLine(delimiter=",")
    parse.setup()
    text = path.read_text(encoding="utf-8").split("\n")  # lines as Beam's ReadFromText splits them
    lines = [cells for line in text if line for cells, _ in parse.process(line)]
    header, rows = [c.decode() for c in lines[0]], lines[1:]
    inferrer = csv_decoder.ColumnTypeInferrer(header, skip_blank_lines=True)
    acc = inferrer.create_accumulator()
    for cells in rows:
        acc = inferrer.add_input(acc, cells)
    infos = inferrer.extract_output(acc)
    to_example = _ParsedCsvToTfExample()
    examples = [ex.SerializeToString() for cells in rows for ex in to_example.process(cells, infos)]
    decoder = example_coder.ExamplesToRecordBatchDecoder(build_schema(cfg).SerializeToString())
    return decoder.DecodeBatch(examples)


@pytest.fixture(scope="module")
def base_frame(synth_dir):
    return pd.read_csv(split_path(synth_dir, "train"), dtype=str, keep_default_na=False).iloc[:20]


CELL = (st.sampled_from(["", "0", "1", "1.0", "0.0", "-3", "2.5", "1e3", "abc", "nan", "inf", "t1|t2", "|", " ",
                         str(2 ** 63), str(2 ** 53 + 1), "+7", "007", "ü", "a b"])
        | st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=6))


@settings(max_examples=fuzz_examples(40))
@given(edits=st.lists(st.tuples(st.integers(0, 19), st.sampled_from(sorted(RULES)), CELL), min_size=1, max_size=4),
       column_wide=st.none() | st.tuples(st.sampled_from(sorted(RULES)), CELL))
def test_loader_accepts_exactly_what_the_pipeline_parses(base_frame, tmp_path_factory, edits, column_wide):
    frame = base_frame.copy()
    for row, col, cell in edits:
        frame.loc[row, col] = cell
    if column_wide:  # a whole column in one form, e.g. every label written 1.0, every price an integer
        frame[column_wide[0]] = column_wide[1]
    path = tmp_path_factory.mktemp("fuzzcsv") / "data.csv"
    frame.to_csv(path, index=False)
    try:
        typed = read_csv_checked(path, CFG)
    except DataError as e:
        message = str(e)
        assert message.startswith(f"{path}: ") and "column '" in message, message
        named = message.split("column '", 1)[1].split("'", 1)[0]
        changed = {c for _, c, _ in edits} | ({column_wide[0]} if column_wide else set())
        assert named in changed, (named, changed, message)
        return
    batch = _csv_example_gen(path, CFG)  # must not raise: the pipeline parses what the loader accepted
    for col, rule in RULES.items():
        got = batch.column(batch.schema.get_field_index(col)).to_pylist()
        for i, cell in enumerate(got):
            mine = typed[col].iloc[i]
            if cell in (None, []):
                assert (isinstance(mine, float) and np.isnan(mine)) or mine == "", (col, i, mine)
            elif rule.kind in ("numeric", "label"):
                assert np.isclose(cell[0], mine, rtol=1e-6), (col, i, cell, mine)
            elif rule.kind == "time" or rule.dtype == "int":
                assert cell[0] == int(mine), (col, i, cell, mine)
            else:
                # ids: the pipeline splits the raw text and drops empty tokens; the loader's canonical text too
                sep = rule.separator.encode()
                tokens = [t for t in cell[0].split(sep) if t] if rule.kind == "ids" else [cell[0]]
                assert sep.join(tokens).decode() == mine, (col, i, cell, mine)


# -- case float-labels-transform-crash, at every file door -----------------------------------------------------------
def test_float_labels_are_refused_up_front_by_the_check_train_and_the_pipeline(tmp_path, capsys):
    from mdl_tf.config import load

    cfg = load(FLOAT_LABELS)
    with pytest.raises(DataError) as err:
        preflight.check_input(FLOAT_LABELS, cfg)
    expected = (f"{FLOAT_LABELS / 'train' / 'data.csv'}: row 1 (line 2), column 'click': value '0.0' is 0 or 1 written as a decimal; "
                f"expected the label 0 or 1 written as an integer")
    assert str(err.value).startswith(expected)
    root = tmp_path / "root"
    assert main(["pipeline", "run", "--data", str(FLOAT_LABELS), "--schema", str(FLOAT_LABELS), "--root", str(root),
                 "--train-steps", "5", "--d-model", "16", "--no-cache"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("mdl-tf: error: " + expected) and err_text.count("\n") == 1
    assert not (root / "serving").exists()
    assert main(["train", "--data", str(FLOAT_LABELS), "--out", str(tmp_path / "model"), "--epochs", "1"]) == 2
    assert capsys.readouterr().err.startswith("mdl-tf: error: " + expected)
    assert not (tmp_path / "model" / "saved_model").exists()


def test_integer_ids_in_a_user_column_that_is_no_feature_get_a_fix_that_applies(synth_dir, synth_cfg, tmp_path):
    """A user column outside `features` has no `dtype` key: the refusal of its integer ids offers what is possible."""
    from mdl_tf.config import from_dict

    cfg = from_dict({**synth_cfg.to_dict(), "user_column": "visitor"}, "t.yaml")
    data = tmp_path / "visitor"
    shutil.copytree(synth_dir, data)
    for split in ("train", "eval"):
        frame = pd.read_csv(split_path(data, split), dtype=str, keep_default_na=False)
        frame.assign(visitor=[str(i) for i in range(len(frame))]).to_csv(split_path(data, split), index=False)
    with pytest.raises(DataError, match=r"column 'visitor' holds only integers, .* 'visitor' is the config's user or "
                                        r"query column, whose ids are text: make them text \(e.g. prefix 'u'\), or "
                                        r"declare 'visitor' also as a categorical feature with `dtype: int`"):
        preflight.check_input(data, cfg)


def test_csv_shapes_the_pipeline_cannot_read_are_refused(synth_dir, synth_cfg, tmp_path):
    frame = pd.read_csv(split_path(synth_dir, "eval"), dtype=str, keep_default_na=False)

    def refused(edit, *needles, split="eval"):
        data = tmp_path / f"d{refused.n}"
        refused.n += 1
        shutil.copytree(synth_dir, data)
        edit(data / split / "data.csv")
        with pytest.raises(DataError) as err:
            preflight.check_input(data, synth_cfg)
        for needle in needles:
            assert needle in str(err.value), (needle, str(err.value))
    refused.n = 0

    refused(lambda p: frame.assign(user_age=frame["user_age"].map(lambda v: str(int(float(v))))).to_csv(p, index=False),
            "column 'user_age' holds only integers", "reads it as INT", "declares it FLOAT", "decimal point")
    refused(lambda p: frame.assign(item_tags="5").to_csv(p, index=False), "column 'item_tags' holds only integers",
            "holds separator-joined ids, which are text", "prefix the ids, 't5|t7'")
    refused(lambda p: frame.assign(device="7").to_csv(p, index=False), "column 'device' holds only integers",
            "declare `dtype: int` for 'device'")
    # Several such columns: one error names them all (a user once re-ran once per column).
    refused(lambda p: frame.assign(device="7", user_age="30", item_price="5").to_csv(p, index=False),
            "eval/data.csv: 3 columns: (1) column 'user_age' holds only integers", "(2) column 'item_price' holds "
            "only integers", "(3) column 'device' holds only integers")
    refused(lambda p: frame.assign(scenario="").to_csv(p, index=False), "row 1 (line 2), column 'scenario'",
            "required in every row")
    refused(lambda p: frame.assign(ts="1.5").to_csv(p, index=False), "column 'ts': value '1.5' is not an integer")
    def extra_field(p):
        lines = p.read_text().split("\n")
        lines[3] += ",extra"
        p.write_text("\n".join(lines))
    refused(extra_field, "not a valid CSV file", "Expected 16 fields in line 4, saw 17")
    refused(lambda p: p.write_text(p.read_text().splitlines()[0] + "\n1700000000,u1\n"), "row 1 has 2 fields, the "
            "header 16")

    def second_file(p):
        frame[list(reversed(frame.columns))].to_csv(p.parent / "more.csv", index=False)
    refused(second_file, "more.csv: header differs from data.csv's")


def test_int_ids_are_normalised_the_way_csvexamplegen_reads_them(synth_dir, tmp_path):
    """A leading zero or sign must not make `mdl-tf train` see another id than the pipeline and the server."""
    from mdl_tf.config import from_dict

    raw = {**synthetic.FEATURES_YAML, "features": [{**f, "dtype": "int"} if f["name"] == "hour" else f
                                                   for f in synthetic.FEATURES_YAML["features"]]}
    cfg = from_dict(raw)
    frame = pd.read_csv(split_path(synth_dir, "eval"), dtype=str, keep_default_na=False).iloc[:3]
    frame["hour"] = ["007", "+7", ""]
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    assert read_csv_checked(path, cfg)["hour"].tolist() == ["7", "7", ""]
    assert _csv_example_gen(path, cfg).column(
        _csv_example_gen(path, cfg).schema.get_field_index("hour")).to_pylist()[:2] == [[7], [7]]


# -- the command line: one line, exit code 2 --------------------------------------------------------------------------
MISTAKES = [
    (["data", "synth", "--out", "o", "--rows", "300"], "--rows: 300 is too small; it must be at least 1000"),
    (["data", "synth", "--out", "o", "--rows", "many"], "--rows: 'many' is not an integer"),
    (["schema", "export", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["train", "--data", "d", "--out", "o", "--model", "gpt"], "invalid choice: 'gpt'"),
    (["train", "--data", "d", "--out", "o", "--batch-size", "0"], "--batch-size: 0 is too small"),
    (["serve", "--model-base-path", "b", "--model-name", "m", "--port", "70000"], "70000 is not a port number"),
    (["predict", "--server", "h:1", "--model-name", "m", "--input", "/nonexistent/rows.jsonl"],
     "/nonexistent/rows.jsonl: cannot read the input (No such file or directory)"),
    (["train", "--data", "/nonexistent", "--out", "o"], "/nonexistent: feature config not found"),
    (["bench", "pipeline", "--rows", "10k"], "--rows '10k': expected comma-separated integers >= 1, e.g. 10000,100000"),
]


def _one_line(code, stderr, needle):
    assert code == 2, (code, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mdl-tf")]
    assert len(lines) == 1 and needle in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv, needle", MISTAKES)
def test_command_line_mistakes_end_in_one_line_and_exit_code_2(argv, needle, tmp_path, monkeypatch, capsys):
    """Every case through `mdl_tf.cli.main` in this process (what the console script calls)."""
    monkeypatch.chdir(tmp_path)
    code = main(list(argv))
    _one_line(code, capsys.readouterr().err, needle)
    assert not any(tmp_path.iterdir()), "a user mistake leaves nothing behind"


@pytest.mark.parametrize("argv, needle", [MISTAKES[0], MISTAKES[7]])  # an argparse error, an error in the command
def test_command_line_mistakes_in_a_real_process(argv, needle, tmp_path):
    """The same, as a user's shell sees it: the process's exit code and its whole stderr."""
    res = subprocess.run([sys.executable, "-m", "mdl_tf.cli", *argv], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                                            "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    _one_line(res.returncode, res.stderr, needle)


def test_user_given_integers_elsewhere_are_refused_by_name(monkeypatch, tmp_path):
    """Config fields, TF_CONFIG and version folders: no bare int() on what a user wrote."""
    from mdl_tf.config import ConfigError, from_dict
    from mdl_tf.serving.model_manager import ModelManager
    from mdl_tf.training.distribute import ClusterConfigError, check_cluster

    for patch, needle in [({"embedding_dim": "16"}, "'embedding_dim' must be an integer, got '16'"),
                          ({"version": 1.5}, "'version' must be an integer, got 1.5")]:
        with pytest.raises(ConfigError, match=needle):
            from_dict({**synthetic.FEATURES_YAML, **patch})
    raw = {**synthetic.FEATURES_YAML, "features": [{**f, "max_len": "four"} if f["name"] == "item_tags" else f
                                                   for f in synthetic.FEATURES_YAML["features"]]}
    with pytest.raises(ConfigError, match=r"\(item_tags\): 'max_len' must be an integer, got 'four'"):
        from_dict(raw)
    for tf_config, needle in [
            ('{"cluster": {"chief": ["localhost:x"], "worker": ["localhost:2"], "ps": ["localhost:3"]}, '
             '"task": {"type": "chief", "index": 0}}', "address 'localhost:x' is not HOST:PORT"),
            ('{"cluster": {"chief": ["localhost:1"], "worker": ["localhost:2"], "ps": ["localhost:3"]}, '
             '"task": {"type": "worker", "index": "0"}}', "task index '0' must be an integer from 0 to 0")]:
        monkeypatch.setenv("TF_CONFIG", tf_config)
        with pytest.raises(ClusterConfigError, match=needle):
            check_cluster("parameter_server")
    (tmp_path / "²").mkdir()  # str.isdigit() says yes, int() says no
    (tmp_path / "²" / "saved_model.pb").write_bytes(b"")
    assert ModelManager(tmp_path, "m").candidates() == []
