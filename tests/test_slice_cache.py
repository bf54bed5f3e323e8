"""The on-disk caches (calibration slices, parsed bundled traces): keyed by content, harmless
when stale or broken; and a light import."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simcluster.calibration.slice_cache import SliceStore, cache_dir, content_hash

ROOT = Path(__file__).resolve().parents[1]


def test_cache_dir_is_per_user_and_never_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMCLUSTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = cache_dir()
    assert d == tmp_path / "simcluster"
    import simcluster
    assert Path(simcluster.__file__).parent not in d.parents
    monkeypatch.setenv("SIMCLUSTER_CACHE_DIR", "")
    assert cache_dir() is None
    monkeypatch.setenv("SIMCLUSTER_CACHE_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"


def test_content_hash_follows_table_bytes_and_parts(tmp_path):
    folder = tmp_path / "DEV"
    folder.mkdir()
    (folder / "gemm.csv").write_text("m,n,k,time_s\n1,2,3,0.1\n")
    h1 = content_hash({"DEV": folder}, ["spec"])
    assert h1 == content_hash({"DEV": folder}, ["spec"])
    assert h1 != content_hash({"DEV": folder}, ["spec2"])
    (folder / "gemm.csv").write_text("m,n,k,time_s\n1,2,3,0.2\n")
    assert h1 != content_hash({"DEV": folder}, ["spec"])


def test_store_round_trip_is_exact(tmp_path):
    path = tmp_path / "s.bin"
    store = SliceStore(path)
    ys = np.random.default_rng(0).normal(size=481)
    store.put(["slice", "DEV", "gemm", "bf16", None, [1.5, 2.25]], ys)
    store.put(["links_done"], [1])
    again = SliceStore(path)
    assert np.array_equal(again.get(["slice", "DEV", "gemm", "bf16", None, [1.5, 2.25]]), ys)
    assert again.get(["slice", "DEV", "gemm", "bf16", None, [1.5, 2.5]]) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_a_corrupt_file_costs_only_a_recomputation(tmp_path, damage):
    path = tmp_path / "s.bin"
    store = SliceStore(path)
    store.put(["a"], np.arange(5.0))
    store.put(["b"], np.arange(7.0))
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[:-3])
    elif damage == "garbage":
        path.write_bytes(blob + b"not a record at all")
    else:
        path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    broken = SliceStore(path)
    assert np.array_equal(broken.get(["a"]), np.arange(5.0))     # records before the damage
    assert damage == "garbage" or broken.get(["b"]) is None
    broken.put(["c"], [1.0])                                      # rewritten whole, clean
    fixed = SliceStore(path)
    assert np.array_equal(fixed.get(["c"]), [1.0]) and fixed.get(["a"]) is not None
    assert not fixed._rewrite


def test_an_unwritable_folder_is_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SliceStore(blocker / "sub" / "s.bin")      # a folder that cannot be created
    store.put(["a"], [1.0])
    assert store.get(["a"]) == [1.0]


def test_cached_calibration_equals_a_fresh_fit_and_skips_scipy(tmp_path):
    """Cold (fit) and warm (cached) processes print the same times to the last bit; the warm
    one never imports scipy."""
    code = ("import sys, numpy as np\n"
            "from simcluster.calibration import load_calibration\n"
            "from simcluster.cost import CostModel, Layout\n"
            "from simcluster.hardware import load_device\n"
            "from simcluster.models import model_preset\n"
            "t = CostModel(load_calibration('measured')).timer(model_preset('llama-2-7b'),"
            " Layout.uniform(load_device('H100-SXM')))\n"
            "a = t.time(np.array([700]), np.array([0]), 3, 3000, 4)\n"
            "b = t.decode_steps(9, 9000, 5)\n"
            "print(repr(a), b.tolist(), 'scipy' in sys.modules)\n")
    env = {**os.environ, "SIMCLUSTER_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def run():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout.split()
        return " ".join(out[:-1]), out[-1]
    cold, cold_scipy = run()
    warm, warm_scipy = run()
    assert cold == warm
    assert cold_scipy == "True" and warm_scipy == "False"
    assert list((tmp_path / "calibration").glob("slices-*.bin"))


# -- parsed bundled traces -------------------------------------------------------------------

def test_bundled_traces_are_parsed_once_and_read_back_the_same(monkeypatch, tmp_path):
    import simcluster.workload.loaders as loaders
    from simcluster.workload import load_trace
    monkeypatch.setenv("SIMCLUSTER_CACHE_DIR", str(tmp_path))
    parsed = load_trace("azure-conv")                   # parsed, and kept
    entries = list((tmp_path / "traces").glob("*.npz"))
    assert len(entries) == 1

    def no_parse(*a, **k):
        raise AssertionError("parsed again")
    monkeypatch.setattr(loaders, "_load", no_parse)
    again = load_trace("azure-conv")                    # from the cache
    for field in ("arrival_s", "prompt_tokens", "output_tokens"):
        a, b = getattr(parsed, field), getattr(again, field)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert again.name == parsed.name == "azure-conv" and not again.arrival_s.flags.writeable
    entries[0].write_bytes(b"PK\x03\x04 torn")          # a broken entry is parsed again
    monkeypatch.undo()
    monkeypatch.setenv("SIMCLUSTER_CACHE_DIR", str(tmp_path))
    third = load_trace("azure-conv")
    assert np.array_equal(third.arrival_s, parsed.arrival_s)
    assert np.load(entries[0])["arrival_s"].shape == parsed.arrival_s.shape   # rewritten


def test_trace_cache_off_and_files_by_path_always_parse(monkeypatch, tmp_path):
    import simcluster.workload.loaders as loaders
    from simcluster.workload import load_trace
    from simcluster.workload.bundled import bundled_trace_path
    calls = []
    real = loaders._load

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)
    monkeypatch.setattr(loaders, "_load", counting)
    monkeypatch.setenv("SIMCLUSTER_CACHE_DIR", "")
    load_trace("azure-code")
    load_trace("azure-code")
    monkeypatch.setenv("SIMCLUSTER_CACHE_DIR", str(tmp_path))
    load_trace(bundled_trace_path("azure-code"))       # a path, not the bundled name
    assert len(calls) == 3 and not (tmp_path / "traces").exists()


def test_simulator_imports_without_pandas_or_scipy():
    """Set-up stays light: pandas is imported when result frames are built, scipy when a
    calibration is fitted."""
    code = ("import sys\n"
            "import simcluster.simulation, simcluster.cluster, simcluster.cost, "
            "simcluster.calibration, simcluster.workload, simcluster.policies\n"
            "print(sorted(m for m in ('pandas', 'scipy', 'pyarrow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert out.strip() == "[]"



def test_a_plain_simulation_imports_only_what_it_runs():
    """A simulation of a trace on plain replicas (vLLM-like batching, a plain router, a dense
    model given by name) imports none of the parts it does not run: trace generators and
    transforms, other pool kinds, engine models, mixtures of experts, config.json reading, the
    other built-in policies. Without cached bytecode each would be compiled in its set-up."""
    code = ("import sys\n"
            "import simcluster as sc\n"
            "from simcluster.policies import registry\n"
            "later = list(registry.BUILTIN_MODULES)\n"
            "trace = sc.Trace([0.0, 0.5], [16, 32], [4, 8])\n"
            "spec = sc.InstanceSpec(sc.Layout.uniform(sc.load_device('H100-SXM')), "
            "sc.InstanceConfig())\n"
            "sc.Simulation(trace, 'llama-2-7b', [spec], router='round_robin', "
            "cost_model=sc.CostModel('datasheet')).run()\n"
            "unused = ['simcluster.workload.synthetic', 'simcluster.workload.transforms', "
            "'simcluster.workload.prefixes', 'simcluster.cluster.pools', "
            "'simcluster.cluster.phase_pools', 'simcluster.engines.model', "
            "'simcluster.engines.spec', 'simcluster.cost.moe', 'simcluster.models.hf_config', "
            "*later]\n"
            "print(sorted(m for m in unused if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
