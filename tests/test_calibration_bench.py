"""The calibration micro-benchmark suite, without torch or a GPU: table files, shape grids,
the command line's checks, and the measured tables committed under hwspecs/calibration."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from simcluster.harness.kernels import TABLES, TIMING_COLUMNS, read_table, summary_lines, \
    write_table
from simcluster.harness.kernels import collective, common, cpu, gpu
from simcluster.harness.kernels.__main__ import parse_only, select_tables

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO / "hwspecs" / "calibration"


# --------------------------------------------------------------------------- import

def test_package_import_needs_no_torch():
    code = ("import sys; import simcluster.harness.kernels as b; "
            "from simcluster.harness.kernels import gpu, cpu, collective, common; "
            "assert 'torch' not in sys.modules, 'torch imported at module load'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_main_without_torch_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    hint = r'pip install "simcluster\[calibrate\]"'
    with pytest.raises(common.CalibrationDependencyError, match=hint):
        common.require_torch()
    from simcluster.harness.kernels.__main__ import main
    with pytest.raises(common.CalibrationDependencyError):
        main(["--out", str(tmp_path), "--quick"])


# --------------------------------------------------------------------------- table files

def _rows():
    return [
        {"m": 1, "n": 4096, "k": 4096, "dtype": "bf16", "time_s": 1.25e-5, "time_p10_s": 1.2e-5,
         "time_p90_s": 1.3e-5, "repeats": 50, "flops": 2 * 4096 * 4096,
         "bytes": 2 * (4096 + 4096 * 4096 + 4096), "ok": True, "sources": "llama2-7b/out/tp1"},
        {"m": 16384, "n": 8, "k": 2, "dtype": "bf16", "time_s": 3.0, "time_p10_s": 2.0,
         "time_p90_s": 4.0, "repeats": 5, "flops": 10 ** 15, "bytes": 12, "ok": False,
         "sources": "a;b"},
    ]


def test_write_then_read_round_trip(tmp_path):
    cols = ["m", "n", "k", "dtype", *TIMING_COLUMNS, "ok", "sources"]
    meta = {"table": "gemm", "device_name": "NVIDIA H100 80GB HBM3", "sm_count": 132,
            "l2_cache_bytes": 52428800, "note": "a value\nover two lines # with a hash",
            "quick": False}
    path = tmp_path / "gemm.csv"
    assert write_table(path, cols, _rows(), meta) == 2
    text = path.read_text().splitlines()
    assert text[0] == "# table: gemm"
    assert all(line.startswith("# ") for line in text[:len(meta)])
    assert text[len(meta)] == ",".join(cols)
    md, rows = read_table(path)
    assert md["device_name"] == "NVIDIA H100 80GB HBM3"
    assert md["sm_count"] == 132 and md["l2_cache_bytes"] == 52428800
    assert md["quick"] is False
    assert "\n" not in md["note"] and "#" not in md["note"]
    assert [r["m"] for r in rows] == [1, 16384]
    assert rows[0]["time_s"] == pytest.approx(1.25e-5)
    assert rows[1]["flops"] == 10 ** 15 and isinstance(rows[1]["flops"], int)
    assert rows[0]["ok"] is True and rows[1]["ok"] is False
    assert rows[1]["sources"] == "a;b"
    assert not list(tmp_path.glob("*.tmp"))


def test_pandas_reads_the_table(tmp_path):
    pd = pytest.importorskip("pandas")
    cols = ["m", "n", "k", "dtype", *TIMING_COLUMNS, "ok", "sources"]
    path = tmp_path / "gemm.csv"
    write_table(path, cols, _rows(), {"table": "gemm"})
    df = pd.read_csv(path, comment="#")
    assert list(df.columns) == cols
    assert df["m"].tolist() == [1, 16384]
    assert (df["flops"] / df["time_s"]).iloc[0] == pytest.approx(2 * 4096 * 4096 / 1.25e-5)


@pytest.mark.parametrize("bad", [
    {"meta": {"Bad Key": 1}},
    {"row": {"m": 1, "extra": 2}},
    {"row": {"m": "has # hash"}},
])
def test_write_table_rejects_what_cannot_be_read_back(tmp_path, bad):
    rows = [bad.get("row", {"m": 1})]
    with pytest.raises(ValueError):
        write_table(tmp_path / "t.csv", ["m"], rows, bad.get("meta", {"table": "t"}))
    assert not (tmp_path / "t.csv").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_parse_value():
    assert common.parse_value("12") == 12
    assert common.parse_value("-1.5e-06") == pytest.approx(-1.5e-6)
    assert common.parse_value("true") is True
    assert common.parse_value("bf16") == "bf16"
    assert common.parse_value("") == ""
    assert math.isnan(common.parse_value("nan"))


# --------------------------------------------------------------------------- statistics

def test_summarize_median_and_percentiles():
    s = common.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"time_s": 3.0, "time_p10_s": pytest.approx(1.4), "time_p90_s": pytest.approx(4.6),
                 "repeats": 5}
    assert common.percentile([7.0], 0.9) == 7.0
    with pytest.raises(ValueError):
        common.percentile([], 0.5)


def test_buffer_sets_exceed_twice_the_cache():
    l2 = 50 * 2 ** 20
    for set_bytes in (4096, 3 * 2 ** 20, 17 * 2 ** 20, 2 ** 30):
        n = common.n_buffer_sets(set_bytes, 2 * l2, cap=10 ** 6)
        assert n * set_bytes >= 2 * l2
        assert n == 1 or (n - 1) * set_bytes < 2 * l2
    assert common.n_buffer_sets(1, 2 * l2, cap=64) == 64
    assert common.log_spaced_pow2(1024, 8192) == [1024, 2048, 4096, 8192]


def test_device_slug():
    assert common.device_slug("NVIDIA H100 80GB HBM3") == "H100-SXM"
    assert common.device_slug("NVIDIA H100 PCIe") == "H100-PCIE"
    assert common.device_slug("NVIDIA H200") == "H200"
    assert common.device_slug("NVIDIA H200", 2) == "H200-x2"


# --------------------------------------------------------------------------- shape grids

def _expected_projections(m, tp):
    h, hd = m["hidden"], m["head_dim"]
    return {
        "qkv": (h, (m["heads"] + 2 * m["kv_heads"]) * hd // tp),
        "out": (m["heads"] * hd // tp, h),
        "up": (h, (2 if m["gated"] else 1) * m["ffn"] // tp),
        "down": (m["ffn"] // tp, h),
        "lm_head": (h, m["vocab"] // tp),
    }


@pytest.mark.parametrize("name", sorted(gpu.MODEL_SHAPES))
@pytest.mark.parametrize("tp", gpu.TP_DEGREES)
def test_gemm_grid_covers_every_preset_projection(name, tp):
    grid = gpu.gemm_grid()
    kn = {(k, n): src for _, k, n, lay, src in grid if lay == "nt"}
    for proj, (k, n) in _expected_projections(gpu.MODEL_SHAPES[name], tp).items():
        assert (k, n) in kn, (name, proj, tp)
        assert f"{name}/{proj}/tp{tp}" in kn[(k, n)].split(";")
        assert {m for m, kk, nn, lay, _ in grid if (kk, nn, lay) == (k, n, "nt")} == \
            set(gpu.GEMM_M)


def test_gemm_grid_is_deduplicated_and_bounded():
    grid = gpu.gemm_grid()
    assert len(grid) == len(set((m, k, n, lay) for m, k, n, lay, _ in grid))
    pairs = {(k, n) for _, k, n, _, _ in grid}
    assert 40 <= len(pairs) <= 160
    assert gpu.GEMM_M[0] == 1 and gpu.GEMM_M[-1] == 16384
    # non-power-of-two token counts between the powers of two (suite v3)
    assert {3, 48, 96, 1536, 12288} <= set(gpu.GEMM_M) and len(gpu.GEMM_M) == 28
    # the other weight layout for the small models at TP 1-2, unfused projections too
    nn = {(k, n) for _, k, n, lay, _ in grid if lay == "nn"}
    assert (4096, 11008) in nn and (4096, 1024) in nn and (8192, 10240) not in nn
    assert "llama2-7b/gate_up_proj/tp1" in gpu.projection_shapes()[(4096, 11008)]
    # Llama-2 70B and Llama-3.1 70B share their qkv, out, up and down shapes
    shapes = gpu.projection_shapes()
    assert {"llama2-70b/qkv/tp1", "llama3.1-70b/qkv/tp1"} <= set(shapes[(8192, 10240)])


def test_quick_grids_are_small_and_real():
    shapes = gpu.projection_shapes()
    quick = gpu.gemm_grid(quick=True)
    assert len(quick) <= 16 and {lay for *_, lay, _ in quick} == {"nt", "nn"}
    assert all((k, n) in shapes for _, k, n, _, _ in quick)
    assert len(gpu.prefill_grid(quick=True)) <= 3 and len(gpu.decode_grid(quick=True)) <= 3


def test_attention_grids_respect_their_caps():
    prefill = gpu.prefill_grid()
    assert all(b * s <= gpu.PREFILL_MAX_TOKENS for b, s in prefill)
    assert (1, 16384) in prefill and (16, 4096) in prefill and (16, 8192) not in prefill
    for _, h, kv, d in gpu.ATTN_CONFIGS:
        decode = gpu.decode_grid(kv_heads=kv, head_dim=d)
        assert all(gpu.decode_kv_bytes(b, n, kv, d) <= gpu.DECODE_MAX_KV_BYTES for b, n in decode)
        assert (1, 32768) in decode
    assert (128, 32768) not in gpu.decode_grid(kv_heads=32)       # 68.7 GB of MHA KV
    assert (128, 32768) in gpu.decode_grid(kv_heads=8)            # 17.2 GB of GQA KV
    assert gpu.decode_kv_bytes(2, 1024, 8, 128) == 2 * 2 * 1024 * 8 * 128 * 2


def test_cpu_grids_put_gemv_first_and_cap_threads():
    grid = cpu.cpu_gemm_grid(max_threads=16)
    assert len(grid) == 4 * 3 * 2 * 5
    ms = [m for m, *_ in grid]
    assert ms == sorted(ms) and ms[0] == 1  # a time cut drops the largest M first
    assert {t for *_, t in cpu.cpu_gemm_grid(max_threads=4)} == {1, 2, 4}
    attn = cpu.cpu_attn_grid(max_threads=16)
    assert len(attn) == 2 * 8 * 2 * 3
    assert {L for _, L, _, _ in attn} == set(2 ** i for i in range(7, 15))


# --------------------------------------------------------------------------- command line

def test_only_names_are_checked():
    assert parse_only("gemm, attn_decode") == ["gemm", "attn_decode"]
    assert parse_only(None) is None
    with pytest.raises(ValueError, match="known: launch, memcpy, gemm"):
        parse_only("gemm,flux_capacitor")


def test_table_selection_follows_the_machine():
    assert select_tables(None, has_cuda=False, gpu_count=0) == ["cpu_gemm", "cpu_attn_decode"]
    one = select_tables(None, has_cuda=True, gpu_count=1)
    assert "allreduce" not in one and "gemm" in one
    assert select_tables(None, has_cuda=True, gpu_count=2)[-1] == "allreduce"
    assert one[0] == "launch" and "validation_ops" not in one   # held out: only when named
    assert select_tables(["validation_ops"], has_cuda=True, gpu_count=1) == ["validation_ops"]
    with pytest.raises(RuntimeError):
        select_tables(["allreduce"], has_cuda=True, gpu_count=1)
    assert set(TABLES) == {"launch", "memcpy", "gemm", "elementwise", "attn_prefill",
                           "attn_decode", "cpu_gemm", "cpu_attn_decode", "allreduce",
                           "grouped_gemm", "validation_ops"}


def test_allreduce_formulas_and_no_multicast():
    assert collective.bus_bandwidth(100e9, 2) == pytest.approx(100e9)
    assert collective.bus_bandwidth(100e9, 8) == pytest.approx(175e9)
    env = {"NCCL_NVLS_ENABLE": "1"}
    collective.force_no_multicast(env)
    assert env == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                   "NVSHMEM_DISABLE_NVLS": "1"}
    assert collective.block_size(2 ** 12) > collective.block_size(2 ** 30) == 1


# --------------------------------------------------------------------------- measured tables

MEASURED_FILES = sorted(p for p in MEASURED.glob("*/*.csv")
                        if "suite" in read_table(p)[0])     # measured by this suite
OTHER_FILES = sorted(p for p in MEASURED.glob("*/*.csv") if p not in MEASURED_FILES)

KEY_COLUMNS = {
    "gemm": ["m", "n", "k", "dtype", "layout"],
    "attn_prefill": ["batch", "seq_len", "num_heads", "num_kv_heads", "head_dim", "causal",
                     "backend"],
    "attn_decode": ["batch", "kv_len", "num_heads", "num_kv_heads", "head_dim", "backend"],
    "elementwise": ["op", "tokens", "hidden"],
    "memcpy": ["direction", "size_bytes"],
    "allreduce": ["world_size", "size_bytes", "algbw_bytes_per_s", "busbw_bytes_per_s"],
    "cpu_gemm": ["m", "n", "k", "dtype", "threads"],
    "cpu_attn_decode": ["batch", "kv_len", "dtype", "threads"],
    "grouped_gemm": ["groups", "m", "rows", "n", "k", "dtype", "impl", "padded"],
    "launch": ["op", "mode", "host_dispatch_s", "kernels_per_call"],
}


@pytest.mark.parametrize("path", MEASURED_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_measured_tables_parse_and_are_plausible(path):
    md, rows = read_table(path)
    table = path.stem
    assert md["table"] == table and md["quick"] is False
    assert md["date_utc"].endswith("Z")
    assert ("cpu_model" in md) if table.startswith("cpu_") else ("device_name" in md)
    assert rows
    for col in (*KEY_COLUMNS[table], *TIMING_COLUMNS):
        assert col in rows[0], col
    for r in rows:
        first = r["time_first_s"] if r.get("remeasured") else r["time_s"]
        assert 0 < r["time_p10_s"] <= first <= r["time_p90_s"]   # a re-measured point keeps
        assert r["time_s"] > 0 and r["repeats"] >= 3            # the median of its three
        assert r["bytes"] > 0 or table == "launch"
    if table == "gemm" and "remeasured" in rows[0]:
        assert {r["layout"] for r in rows} == {"nt", "nn"}
        assert any(r["remeasured"] for r in rows)


@pytest.mark.parametrize("path", OTHER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imported_and_derived_tables_name_their_source(path):
    md, rows = read_table(path)
    assert md.get("source") or md.get("derivation")
    assert rows and all(r["time_s"] > 0 for r in rows)


def test_measured_device_folders():
    if not MEASURED_FILES:
        pytest.skip("no measured tables")
    for folder in {p.parent for p in MEASURED_FILES}:
        md, _ = read_table(next(folder.glob("*.csv")))
        if "device_slug" in md:
            assert md["device_slug"] == folder.name
        assert summary_lines(folder)


# --------------------------------------------------------------------------- on a GPU

def test_quick_suite_on_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from simcluster.harness.kernels.__main__ import main
    assert main(["--out", str(tmp_path), "--quick", "--only", "memcpy,gemm"]) == 0
    _, rows = read_table(tmp_path / "gemm.csv")
    assert len(rows) == len(gpu.gemm_grid(quick=True))
