"""The command line on bad input: one named line and exit 2, never a traceback; 1 for a bug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simcluster.cli import main

from test_experiment_cli import TINY

ROOT = Path(__file__).resolve().parents[1]


def _main(capsys, *args):
    try:
        rc = main(list(args))
    except SystemExit as exc:       # argparse's usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_exit_codes_are_documented():
    import simcluster.cli as cli
    assert "0 done" in cli.__doc__ and "2 bad input" in cli.__doc__ and "1 a bug" in cli.__doc__
    assert (cli.EXIT_OK, cli.EXIT_BUG, cli.EXIT_INPUT) == (0, 1, 2)


def test_every_option_of_every_command_says_what_it_is():
    """predict's shape flags, calibrate-engine's scheduler settings and five more printed a
    bare '--m M' in -h: every argument of every command has a help line."""
    import argparse
    from simcluster.cli import build_parser
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    bare = [(name, a.option_strings or a.dest) for name, cmd in sub.choices.items()
            for a in cmd._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not bare, bare


def test_version_and_help_speak_to_users(capsys):
    """``simcluster --version`` was a usage error ('the following arguments are required');
    the version is the installed distribution's, and -h opens with what to run first."""
    from importlib.metadata import version
    import simcluster
    rc, out, _ = _main(capsys, "--version")
    assert rc == 0 and out.strip() == f"simcluster {simcluster.__version__}"
    assert simcluster.__version__ == version("simcluster")      # pyproject's, the same
    rc, out, _ = _main(capsys, "-h")
    assert rc == 0 and "'simcluster run' simulates the bundled default" in " ".join(out.split())


@pytest.mark.parametrize("args, words", [
    (["lst", "devices"], ["invalid choice", "did you mean 'list'"]),
    (["list", "device"], ["did you mean 'devices'"]),
    (["trace-info", "x.csv", "--format", "Azure"], ["choose from", "'azure'", "did you mean"]),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--tp", "0"],
     ["--tp", ">= 1"]),
])
def test_usage_mistakes_exit_2_with_suggestions(capsys, args, words):
    rc, _, err = _main(capsys, *args)
    assert rc == 2 and all(w in err for w in words), err


@pytest.mark.parametrize("args, words", [
    (["predict", "--model", "lama-2-7b", "--device", "H100-SXM", "--decode-seqs", "1"],
     ["unknown model 'lama-2-7b'", "did you mean 'Llama-2-7B'"]),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SMX", "--decode-seqs", "1"],
     ["unknown device 'H100-SMX'", "did you mean 'H100-SXM'"]),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM"], ["empty batch"]),
    # a size without its count: the count named, not guessed as 1
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--prefill-tokens", "2048"],
     ["field 'prefill_seqs'", "prefill_tokens is 2048 but prefill_seqs is 0"]),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-context", "512"],
     ["field 'decode_seqs'", "decode_context is 512 but decode_seqs is 0"]),
    (["predict", "--op", "gemm", "--device", "H100-SXM"], ["--m", "--n", "--k"]),
    (["trace-info", "azure-cnv"], ["did you mean 'azure-conv'"]),
    (["run", "hels_opt3b"], ["no such experiment", "did you mean 'hels_opt30b'"]),
    (["list", "devices"], []),
])
def test_input_mistakes_exit_2_naming_the_mistake(capsys, args, words):
    rc, out, err = _main(capsys, *args)
    if not words:
        assert rc == 0 and "H100-SXM" in out
        return
    assert rc == 2 and err.startswith("simcluster: error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words), err


def test_a_bad_cell_is_shown_as_the_number_it_holds(tmp_path, capsys, monkeypatch):
    """A table's bad cell read 'got np.int64(-1)' (numpy 2's repr), not what the file says."""
    from simcluster.errors import value_text
    import numpy as np
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemm.csv").write_text("m,n,k,dtype,time_s\n1,2,3,bf16,-1\n")
    rc, _, err = _main(capsys, "validate", "gemm.csv", "--device", "H100-SXM")
    assert rc == 2 and err.rstrip().endswith("time_s must be a number > 0, got -1"), err
    assert value_text(np.float64(0.5)) == "0.5" and value_text(np.array([1, 2])) == \
        "array([1, 2])"
    assert len(value_text("x" * 50)) == 40 and value_text("x" * 50).endswith("...")


def test_a_bug_exits_1_with_its_traceback(capsys, monkeypatch):
    import simcluster.cli.simulate as sim
    monkeypatch.setattr(sim, "cmd_list", lambda args: 1 / 0)
    rc = main(["list", "devices"])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error" in err and "ZeroDivisionError" in err


def test_interrupt_exits_130(capsys, monkeypatch):
    import simcluster.cli.simulate as sim

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(sim, "cmd_list", interrupted)
    assert main(["list", "devices"]) == 130 and "interrupted" in capsys.readouterr().err


def test_out_is_checked_before_the_run(tmp_path, capsys):
    exp = tmp_path / "tiny.toml"
    exp.write_text(TINY)
    (tmp_path / "taken").write_text("keep me")
    rc, out, err = _main(capsys, "run", str(exp), "--quiet", "--out", str(tmp_path / "taken"))
    assert rc == 2 and "is a file" in err and "experiment" not in out   # nothing simulated
    assert (tmp_path / "taken").read_text() == "keep me"
    rc, _, err = _main(capsys, "run", str(exp), "--quiet", "--out",
                       str(tmp_path / "taken" / "sub"))
    assert rc == 2 and "is a file" in err
    rc, out, _ = _main(capsys, "run", str(exp), "--quiet", "--out", str(tmp_path / "new" / "d"))
    assert rc == 0 and json.loads((tmp_path / "new" / "d" / "summary.json").read_text())


@pytest.mark.parametrize("command", [["compare", "--vary", "seed=1,2"], ["capacity"],
                                     ["cheapest", "--rate", "4", "--devices", "L4"]])
@pytest.mark.parametrize("flag", ["--out", "--plots"])
def test_the_questions_check_out_and_plots_before_their_runs(tmp_path, capsys, command, flag):
    """compare --out FILE ran both variants, printed the table, then raised FileExistsError
    with a traceback; capacity and cheapest wrote their CSV or figures after every run."""
    exp = tmp_path / "tiny.toml"
    exp.write_text(TINY)
    (tmp_path / "taken").write_text("keep me")
    rc, out, err = _main(capsys, command[0], str(exp), *command[1:], "--quiet", flag,
                         str(tmp_path / "taken"))
    assert rc == 2 and f"field '{flag}': '" in err and "is a file" in err
    assert out == "" and "Traceback" not in err        # nothing ran
    assert (tmp_path / "taken").read_text() == "keep me"


def test_a_file_the_system_refuses_exits_2_naming_it(capsys, monkeypatch):
    """A full disk or a read-only folder met while writing is the machine's, not a bug: the
    path and the system's reason, no traceback. An OSError about no file is still a bug."""
    import errno

    import simcluster.cli.simulate as sim

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/requests.csv")
    monkeypatch.setattr(sim, "cmd_list", full)
    assert main(["list", "devices"]) == 2
    err = capsys.readouterr().err
    assert err == "simcluster: error: /data/out/requests.csv: No space left on device\n"

    def bare(args):
        raise OSError("no file here")
    monkeypatch.setattr(sim, "cmd_list", bare)
    assert main(["list", "devices"]) == 1 and "internal error" in capsys.readouterr().err


def test_a_toml_of_another_kind_is_named_with_its_command(tmp_path, capsys):
    """A sweep file given to run was "field 'trace': missing; expected a table"; an
    experiment given to sweep "field 'instances': unknown key"."""
    sweep = tmp_path / "s.toml"
    sweep.write_text('experiment = "default"\n[grid]\nseed = [1, 2]\n')
    cands = tmp_path / "c.toml"
    cands.write_text('[[candidates]]\nname = "a"\ninstances = [{device = "L4"}]\n')
    exp = str(ROOT / "experiments" / "default.toml")
    for args, says in [(["run", str(sweep)], "s.toml: a sweep file (it has 'grid'), not "
                                             "an experiment file; 'simcluster sweep FILE' "
                                             "takes it"),
                       (["run", str(cands)], "c.toml: a candidates file"),
                       (["sweep", exp], "default.toml: an experiment file (it has "
                                        "'instances'), not a sweep file; 'simcluster run"),
                       (["search", exp], "not a search file"),
                       (["cheapest", "default", "--rate", "2", "--candidates", exp],
                        "not a candidates file")]:
        rc, _, err = _main(capsys, *args)
        assert rc == 2 and says in err, err


def test_broken_pipe_ends_quietly():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "simcluster", "trace-info", "azure-conv"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 0 and err == "", err


def test_bom_toml_and_paths_relative_to_the_experiment(tmp_path, capsys):
    (tmp_path / "exp" / "data").mkdir(parents=True)
    (tmp_path / "exp" / "data" / "t.csv").write_text(
        "arrival_s,prompt_tokens,output_tokens\n0,100,5\n0.5,200,5\n")
    dev = (ROOT / "hwspecs" / "devices" / "l40s.toml").read_text()
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mygpu.toml").write_text(
        "\n".join(ln for ln in dev.splitlines() if not ln.startswith("aliases"))
        .replace('name = "L40S"', 'name = "mygpu"'))
    text = ('[trace]\nsource = "data/t.csv"\n[model]\nname = "llama-2-7b"\n'
            '[[instances]]\ndevice = "../specs/mygpu.toml"\n[cost]\ncalibration = "datasheet"\n')
    (tmp_path / "exp" / "e.toml").write_bytes("\ufeff".encode() + text.encode())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        rc, out, err = _main(capsys, "run", str(tmp_path / "exp" / "e.toml"), "--quiet")
    finally:
        os.chdir(cwd)
    assert rc == 0 and "2 requests" in out and "mygpu" in out, err


def test_calibrate_engine_name_is_confined_and_bundled_engines_need_force(tmp_path, capsys,
                                                                          monkeypatch):
    lines = (ROOT / "hwspecs" / "engines" / "hf-cb-h100" / "profile-grid.csv").read_text() \
        .splitlines()
    rows = [ln for ln in lines if not ln.startswith("#")]
    log = tmp_path / "log.csv"        # a small slice: the fit is not what this tests
    log.write_text("\n".join([ln for ln in lines if ln.startswith("#")] + rows[:1]
                             + rows[1:200]) + "\n")
    base = ["calibrate-engine", str(log), "--device", "H100-SXM", "--model", "llama-2-7b",
            "--calibration", "datasheet"]
    bundled = ROOT / "hwspecs" / "engines" / "hf-cb-h100.toml"
    before = bundled.read_bytes()
    for name in ("../../evil", "/tmp/evil", "a/b", ""):
        rc, _, err = _main(capsys, *base, "--name", name)
        assert rc == 2 and "--name" in err and "plain engine name" in err
    rc, _, err = _main(capsys, *base, "--name", "hf-cb-h100")
    assert rc == 2 and "--force" in err and "shipped with simcluster" in err
    assert bundled.read_bytes() == before and not (ROOT / "evil.toml").exists()
    monkeypatch.setenv("SIMCLUSTER_HWSPECS", str(tmp_path))     # a folder of one's own
    rc, out, _ = _main(capsys, *base, "--name", "mine")
    assert rc == 0 and (tmp_path / "engines" / "mine.toml").exists()
    rc, _, err = _main(capsys, *base, "--name", "mine")
    assert rc == 2 and "--force" in err
    rc, _, _ = _main(capsys, *base, "--name", "mine", "--force")
    assert rc == 0 and bundled.read_bytes() == before
    from simcluster.engines import list_engines, load_engine
    assert {"mine", "hf-cb-h100"} <= set(list_engines()) and load_engine("mine").name == "mine"


_LLAMA = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
          "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000}


@pytest.mark.parametrize("args, name, text, where", [
    (["predict", "--in", "{f}"], "s.csv", "op,device,m,n,k,m\ngemm,H100-SXM,1,2,3,4\n",
     "s.csv:1: field 'm'"),
    (["validate", "{f}", "--device", "H100-SXM"], "gemm.csv",
     "# table: gemm\nm,n,k,dtype,time_s,k\n1,2,3,bf16,1e-5,4\n", "gemm.csv:2: field 'k'"),
    (["calibrate-engine", "{f}", "--device", "H100-SXM", "--model", "llama-2-7b", "--name",
      "x", "--out", "x.toml"], "log.csv",
     "# engine: e\niteration_s,prefill_tokens,decode_seqs,iteration_s\n0.1,10,0,0.2\n",
     "log.csv:2: field 'iteration_s'"),
    (["validate-e2e", "{f}", "--engine", "hf-cb-h100"], "r.csv",
     "arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s,ttft_s\n0,9,5,.1,.1,1,2\n",
     "r.csv:1: field 'ttft_s'"),
    (["import-profile", "splitwise", "{f}", "--model", "m", "--hardware", "h", "--tp", "1",
      "--out", "o.csv"], "p.csv", "model,model\nm,m\n", "p.csv:1: field 'model'"),
    (["predict", "--model", "{f}", "--device", "H100-SXM", "--decode-seqs", "1",
      "--decode-context", "5"], "config.json",
     json.dumps(_LLAMA)[:-1] + ', "num_hidden_layers": 40}', "config.json: field "
     "'num_hidden_layers': key 'num_hidden_layers' appears twice"),
])
def test_a_column_or_key_given_twice_is_named(capsys, tmp_path, monkeypatch, args, name, text,
                                              where):
    """pandas read a second column of one name as 'name.1' and json kept the last of two
    keys: the file's other value went unread."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text)
    rc, _, err = _main(capsys, *[a.replace("{f}", name) for a in args])
    assert rc == 2 and where in err and ("appears 2 times in the header" in err
                                         or "appears twice" in err)


@pytest.mark.parametrize("args, flag", [
    # each flag did nothing, without a word
    (["run", "--timeline-window", "0,5"], "--timeline-window"),
    (["run", "--timeline-max-events", "10"], "--timeline-max-events"),
    (["sweep", "s.toml", "--fresh"], "--fresh"),
    (["capacity", "--jobs", "2", "--ray", "local"], "--jobs"),
    (["capacity", "--rel-tol", "0.1", "--tol", "0.5"], "--rel-tol"),
    (["cheapest", "--rate", "2", "--candidates", "c.toml", "--devices", "L4"], "--devices"),
    (["cheapest", "--rate", "2", "--candidates", "c.toml", "--tp", "1,2"], "--tp"),
    (["cheapest", "--rate", "2", "--candidates", "c.toml", "--no-mixed"], "--no-mixed"),
    (["predict", "--op", "gemm", "--device", "H100-SXM", "--m", "1", "--n", "2", "--k", "3",
      "--kv-len", "5"], "--kv-len"),
    (["predict", "--op", "gemm", "--device", "H100-SXM", "--m", "1", "--n", "2", "--k", "3",
      "--model", "llama-2-7b"], "--model"),
    (["predict", "--in", "s.csv", "--device", "H100-SXM"], "--device"),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-seqs", "1",
      "--m", "64"], "--m"),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-seqs", "1",
      "--out", "p.csv"], "--out"),
    (["predict", "--model", "llama-2-7b", "--device", "H100-SXM", "--decode-seqs", "1",
      "--link", "NVLink4"], "--link"),
    (["import-profile", "vidur", "x.csv", "--device", "X", "--model", "m"], "--model"),
    (["import-profile", "splitwise", "x.csv", "--device", "X"], "--device"),
    (["search", "tiny", "--workers", "2", "--ray", "local"], "--workers"),
])
def test_a_flag_that_would_do_nothing_is_named(capsys, tmp_path, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _main(capsys, *args)
    assert rc == 2 and f"field '{flag}': does nothing" in err and not out


def test_calibrate_engine_refuses_a_log_given_twice(capsys, tmp_path):
    """Its iterations counted twice in the fit."""
    log = ROOT / "hwspecs/engines/hf-cb-h100/profile-grid.csv"
    rc, _, err = _main(capsys, "calibrate-engine", str(log), "--decode-only", str(log),
                       "--device", "H100-SXM", "--model", "llama-2-7b", "--name", "x",
                       "--out", str(tmp_path / "x.toml"))
    assert rc == 2 and "is given twice: its iterations would count twice" in err
    assert not (tmp_path / "x.toml").exists()
    vidur = ROOT / "hwspecs/calibration/A100-80GB/vidur/mlp-llama-2-7b.csv"
    rc, _, err = _main(capsys, "import-profile", "vidur", str(vidur), str(vidur), "--device",
                       "X", "--out", str(tmp_path / "t"))
    assert rc == 2 and "is given twice" in err and not (tmp_path / "t").exists()


def test_calibrate_engine_writes_only_what_loads(capsys, tmp_path):
    """A --transfer rule or --batching policy that does not exist was written into the spec
    (which then failed to load), and --batching vllm carried the log's hf_cb parameters."""
    log = str(ROOT / "hwspecs/engines/hf-cb-h100/profile-grid.csv")
    base = ["calibrate-engine", log, "--device", "H100-SXM", "--model", "llama-2-7b",
            "--name", "x", "--out", str(tmp_path / "x.toml")]
    for extra, field in ((["--transfer", "kv_token=banana"], "--transfer"),
                         (["--batching", "bogus"], "--batching")):
        rc, _, err = _main(capsys, *base, *extra)
        assert rc == 2 and f"field '{field}'" in err and not (tmp_path / "x.toml").exists()
    rc, _, err = _main(capsys, *base, "--batching", "vllm")
    assert rc == 0
    from simcluster.engines import load_engine
    spec = load_engine(tmp_path / "x.toml")
    assert spec.batching == "vllm" and spec.batching_params == {}


def test_validate_e2e_set_values_are_named(capsys):
    replay = str(ROOT / "hwspecs/engines/hf-cb-h100/replay-moderate-b.csv")
    rc, _, err = _main(capsys, "validate-e2e", replay, "--engine", "hf-cb-h100", "--set",
                       "num_blocks=abc")
    assert rc == 2 and "field '--set': num_blocks: expected a whole number, got 'abc'" in err


def test_calibrate_names_a_gpu_table_on_a_machine_without_one(capsys, tmp_path):
    """It raised RuntimeError from the harness (an internal-error traceback), after making the
    folder and its bench.log."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, _, err = _main(capsys, "calibrate", "--out", str(tmp_path / "c"), "--quick", "--only",
                       "gemm")
    assert rc == 2 and "field '--only': this machine cannot run ['gemm']" in err
    assert not (tmp_path / "c").exists()
