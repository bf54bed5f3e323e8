"""--set key.path=value overrides: parsed as TOML values, applied before validation, checked
like the file's own keys, errors naming the key and the override."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _tiny import TINY, write_tiny
from simcluster.errors import InputError
from simcluster.experiment import load_experiment
from simcluster.experiment.overrides import (apply_overrides, as_mapping, field_name,
                                             parse_override, parse_value, split_values)


@pytest.mark.parametrize("text, value", [
    ("12", 12), ("12.5", 12.5), ("1e3", 1000.0), ("true", True), ('"12"', "12"),
    ("jsq", "jsq"), ("least_outstanding_tokens", "least_outstanding_tokens"),
    ("[1, 2]", [1, 2]), ('["A100-80GB-PCIe", "RTX3090"]', ["A100-80GB-PCIe", "RTX3090"]),
    ("{a = 1}", {"a": 1}), ("H100-SXM", "H100-SXM")])
def test_values_are_toml_or_words(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize("bad", ["router.policy", "=3", "a..b=1", ".a=1"])
def test_malformed_override_names_the_option(bad):
    with pytest.raises(InputError, match="KEY.PATH=VALUE"):
        parse_override(bad)


def test_split_values_keeps_commas_inside_brackets_and_quotes():
    assert split_values('a,b,[1, 2],"x,y"') == ["a", "b", [1, 2], "x,y"]
    with pytest.raises(InputError, match="empty value"):
        split_values("a,,b")


def test_apply_creates_tables_indexes_lists_and_leaves_input_alone():
    data = {"instances": [{"device": "H100-SXM", "count": 2}], "router": {"policy": "rr"}}
    before = copy.deepcopy(data)
    out = apply_overrides(data, ["instances.0.count=8", "router.policy=jsq", "slo.ttft_s=0.5",
                                 "seed=3"])
    assert data == before
    assert out["instances"][0]["count"] == 8 and out["router"]["policy"] == "jsq"
    assert out["slo"] == {"ttft_s": 0.5} and out["seed"] == 3


@pytest.mark.parametrize("override, where, what", [
    ("instances.2.count=1", "instances[2]", "expected an index 0..0"),
    ("instances.x.count=1", "instances.x", "expected an index"),
    ("seed.x=1", "seed.x", "not a table"),
])
def test_a_path_through_the_wrong_thing_names_it(override, where, what):
    data = {"instances": [{"count": 2}], "seed": 0}
    with pytest.raises(InputError) as err:
        apply_overrides(data, [override])
    assert where in str(err.value) and what in str(err.value)


def test_field_name_matches_the_loader():
    assert field_name("instances.0.count") == "instances[0].count"
    assert field_name("trace.rate_per_s") == "trace.rate_per_s"


def test_overrides_equal_editing_the_file(tmp_path):
    path = write_tiny(tmp_path)
    edited = write_tiny(tmp_path, TINY.replace("count = 2", "count = 3")
                        .replace('"least_outstanding_tokens"', '"round_robin"'), "edited.toml")
    a = load_experiment(path, {"instances.0.count": 3, "router.policy": "round_robin"})
    b = load_experiment(edited)
    assert a.instances == b.instances and a.router == b.router == "round_robin"
    ra, rb = a.run().summary(), b.run().summary()
    assert ra == rb


@pytest.mark.parametrize("override, field, msg", [
    ("instances.0.count=0", "instances[0].count", "out of range"),
    ("instances.0.count=two", "instances[0].count", "expected an integer"),
    ("instances.0.cuont=3", "instances[0].cuont", "unknown key"),
    ("slo.ttft_s=-1", "slo.ttft_s", "out of range"),
    ("trace.rate_per_s=fast", "trace.rate_per_s", "expected a number"),
    ("seed=1.5", "seed", "expected an integer"),
    # as TOML writes it, not Python's True; and a table given a bare value is told how to
    # set its keys (router=jsq for router.policy=jsq)
    ("seed=true", "seed", "expected an integer, got true (set by override seed=true)"),
    ("router=jsq", "router", "got 'jsq' (a table's keys are set one by one: router.KEY=VALUE)"),
])
def test_overrides_are_checked_like_toml_keys(tmp_path, override, field, msg):
    path = write_tiny(tmp_path)
    with pytest.raises(InputError) as err:
        load_experiment(path, [override])
    text = str(err.value)
    assert "tiny.toml" in text and f"field '{field}'" in text and msg in text
    assert f"(set by override {override.split('=')[0]}=" in text


def test_overrides_through_the_command_line(tmp_path, capsys):
    from simcluster.cli import main
    path = write_tiny(tmp_path)
    assert main(["run", str(path), "--quiet", "--set", "instances.0.count=1",
                 "--set", "trace.rate_per_s=2"]) == 0
    out = capsys.readouterr().out
    assert "1 instance(s)" in out and "offered 2 req/s" in out
    assert main(["run", str(path), "--set", "instances.0.count=0"]) == 2
    err = capsys.readouterr().err
    assert "instances[0].count" in err and "Traceback" not in err


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                       st.one_of(st.integers(), st.text(max_size=5),
                                 st.lists(st.integers(), max_size=3)), min_size=1),
       st.sampled_from(["a", "b.c", "b.d.e", "z"]), st.integers())
def test_a_set_value_reads_back_and_nothing_else_changes(data, key, value):
    parts = key.split(".")
    through_scalar = len(parts) > 1 and parts[0] in data and not isinstance(data[parts[0]], dict)
    if through_scalar:
        kind = "is a list" if isinstance(data[parts[0]], list) else "not a table"
        with pytest.raises(InputError, match=kind):
            apply_overrides(data, {key: value})
        return
    out = apply_overrides(data, {key: value})
    node = out
    for part in parts[:-1]:
        node = node[part]
    assert node[parts[-1]] == value
    top = key.split(".")[0]
    assert {k: v for k, v in out.items() if k != top} == \
        {k: v for k, v in data.items() if k != top}


def test_as_mapping_takes_strings_and_mappings():
    assert as_mapping(["a=1", "b.c=x"]) == {"a": 1, "b.c": "x"}
    assert as_mapping("a=1") == {"a": 1}
    assert as_mapping({"a": 1}) == {"a": 1} and as_mapping(None) == {}


# -- relative paths in overrides: read from where the override was given ----------------------
CSV = "arrival_s,prompt_tokens,output_tokens\n0.0,100,20\n0.5,200,30\n1.0,50,10\n"
_SYNTHETIC = TINY[TINY.index("[trace.synthetic]"):TINY.index("[model]")]
ON_FILE = TINY.replace(_SYNTHETIC, '[trace]\nsource = "trace.csv"\n')


def _folders(tmp_path):
    """An experiment reading ``trace.csv`` (3 requests) beside it, and a working folder with
    another ``trace.csv`` (4 requests)."""
    exp_dir, work = tmp_path / "exp", tmp_path / "work"
    exp_dir.mkdir()
    work.mkdir()
    assert ON_FILE != TINY
    exp = write_tiny(exp_dir, ON_FILE)
    (exp_dir / "trace.csv").write_text(CSV)
    (work / "trace.csv").write_text(CSV + "1.5,10,5\n")
    return exp, work


def test_a_path_in_an_override_is_read_from_the_current_folder(tmp_path, monkeypatch, capsys):
    from simcluster.cli import main
    exp, work = _folders(tmp_path)
    monkeypatch.chdir(work)
    assert len(load_experiment(exp).trace) == 3            # the file's own: beside the file
    assert len(load_experiment(exp, {"trace.source": "trace.csv"}).trace) == 4
    assert len(load_experiment(exp, {"trace": {"source": "trace.csv"}}).trace) == 4  # a table
    assert main(["run", str(exp), "--quiet", "--set", "trace.source=trace.csv"]) == 0
    assert "4 requests" in capsys.readouterr().out
    assert main(["run", str(exp), "--quiet", "--set", "trace.source=nope.csv"]) == 2
    err = capsys.readouterr().err
    assert str(work / "nope.csv") in err and "override trace.source=" in err
    # only keys the loader reads as paths: a preset's repository id stays a name
    assert load_experiment(exp, {"model.name": "facebook/opt-13b"}).model.num_layers == 40


def test_a_point_reads_its_override_paths_from_where_it_was_made(tmp_path, monkeypatch):
    import pickle
    from simcluster.experiment.points import ExperimentPoint
    exp, work = _folders(tmp_path)
    monkeypatch.chdir(work)
    point = ExperimentPoint.from_file(exp, {"trace.source": "trace.csv", "seed": 4})
    text_key = point.key
    seed_key = ExperimentPoint.from_file(exp, {"seed": 4}).key
    monkeypatch.chdir(tmp_path)              # a worker elsewhere (a Ray worker's folder)
    moved = pickle.loads(pickle.dumps(point))
    assert len(moved.experiment().trace) == 4
    # the key holds the folder of a text override (it may name a file), not of a number
    assert ExperimentPoint.from_file(exp, {"trace.source": "trace.csv", "seed": 4}).key \
        != text_key
    assert ExperimentPoint.from_file(exp, {"seed": 4}).key == seed_key


def test_a_sweep_files_paths_are_read_from_its_folder(tmp_path, monkeypatch):
    from simcluster.experiment.study import sweep_file
    exp, work = _folders(tmp_path)
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "a.csv").write_text(CSV + "1.5,10,5\n2.0,10,5\n")            # 5 requests
    (sweeps / "s.toml").write_text('experiment = "../exp/tiny.toml"\n'
                                   '[grid]\n"trace.source" = ["a.csv", "trace.csv"]\n')
    (sweeps / "trace.csv").write_text(CSV + "1.5,10,5\n" * 3)              # 6 requests
    monkeypatch.chdir(work)
    res = sweep_file(sweeps / "s.toml", jobs=1, progress=False)
    assert sorted(res.frame["requests"]) == [5, 6]
    # --set beside a sweep file: the current folder's file
    (sweeps / "t.toml").write_text('experiment = "../exp/tiny.toml"\n'
                                   '[grid]\n"instances.0.count" = [1, 2]\n')
    res = sweep_file(sweeps / "t.toml", set={"trace.source": "trace.csv"}, jobs=1,
                     progress=False)
    assert list(res.frame["requests"]) == [4, 4]


def test_trace_option_serves_a_trace_file(tmp_path, monkeypatch, capsys):
    from simcluster.cli import main
    exp, work = _folders(tmp_path)
    monkeypatch.chdir(work)
    # --trace first, whatever its place: a --set inside [trace] then applies to the file
    assert main(["run", str(exp), "--quiet", "--set", "trace.rate_per_s=8",
                 "--trace", "trace.csv"]) == 0
    out = capsys.readouterr().out
    assert "4 requests of trace, offered 8 req/s" in out
    # the header says what the run overrode, in the order applied
    assert "with trace={'source': 'trace.csv'}, trace.rate_per_s=8:" in out
    for argv, says in ((["--trace", "nope.csv"], "'nope.csv' is not a file"),
                       (["--trace", "trace.csv", "--trace", "trace.csv"], "given twice")):
        with pytest.raises(SystemExit) as stop:
            main(["run", str(exp), *argv])
        assert stop.value.code == 2 and says in capsys.readouterr().err
    assert main(["run", str(exp), "--quiet", "--trace", "azure-code",      # a bundled one
                 "--set", "trace.first_n=30"]) == 0
    assert "30 requests of azure-code" in capsys.readouterr().out
    assert main(["run", "trace.csv"]) == 2           # a trace where an experiment goes
    err = capsys.readouterr().err
    assert "trace.csv: a trace file, not an experiment TOML" in err and "--trace" in err
    assert "Traceback" not in err


def test_run_prints_rejections_by_kind(tmp_path, monkeypatch, capsys):
    from simcluster.cli import main
    exp, work = _folders(tmp_path)
    # two prompts past Llama-2-7B's 4,096-token context, two served
    (work / "long.csv").write_text(CSV.replace("0.5,200,30", "0.5,5000,30")
                                   .replace("1.0,50,10", "1.0,4500,10") + "1.5,10,5\n")
    monkeypatch.chdir(work)
    results = load_experiment(exp, {"trace.source": "long.csv"}).run()
    kinds = results.rejections()
    assert list(kinds.kind) == ["max_model_len"] and list(kinds.requests) == [2]
    assert kinds.example[0] == results.requests.reason[results.requests.rejected].iloc[0]
    assert main(["run", str(exp), "--quiet", "--trace", "long.csv"]) == 0
    out = capsys.readouterr().out
    assert "rejected requests by reason (2;" in out
    assert "2 x max_model_len (e.g. max_model_len: 5030 tokens" in out
    assert main(["run", str(exp), "--quiet"]) == 0
    assert "rejected requests by reason" not in capsys.readouterr().out
    assert results.rejections().columns.tolist() == ["kind", "requests", "example"]


def test_a_key_set_twice_is_refused_not_replaced():
    """--set seed=1 --set seed=2 ran seed 2; --vary seed=1,2 --vary seed=3,4 ran 3 and 4."""
    from simcluster.experiment.overrides import as_mapping
    with pytest.raises(InputError, match=r"seed is set twice \(1 and 2\)"):
        as_mapping(["seed=1", "seed=2"])
    assert as_mapping(["seed=1", "trace.first_n=5"]) == {"seed": 1, "trace.first_n": 5}
    # a whole table after a key inside it replaced that key
    with pytest.raises(InputError, match="instances would replace instances.0.count"):
        as_mapping(["instances.0.count=2", 'instances=[{device="L4"}]'])
    assert len(as_mapping(['instances=[{device="L4"}]', "instances.0.count=2"])) == 2
    from simcluster.cli.search import _vary
    with pytest.raises(InputError, match="seed is varied twice"):
        _vary(["seed=1,2", "seed=3,4"])
