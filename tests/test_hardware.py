"""Hardware specs: a contract over every device, link and node file, and bad-input messages."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest

from simcluster import hardware as hw
from simcluster.errors import InputError

ROOT = hw.hwspecs_dir()
DEVICE_FILES = sorted((ROOT / "devices").glob("*.toml"))
LINK_FILES = sorted((ROOT / "links").glob("*.toml"))
NODE_FILES = sorted((ROOT / "nodes").glob("*.toml"))


def _ids(paths):
    return [p.stem for p in paths]


def test_registry_is_populated():
    assert len(DEVICE_FILES) >= 14 and len(LINK_FILES) >= 11 and len(NODE_FILES) >= 7
    assert len(hw.list_devices()) == len(DEVICE_FILES)
    assert hw.list_links() == sorted(hw.list_links(), key=str.lower)


# ------------------------------------------------------------------ contract: every device
@pytest.mark.parametrize("path", DEVICE_FILES, ids=_ids(DEVICE_FILES))
def test_device_contract(path: Path):
    spec = hw.load_device(path)
    assert spec.name.lower() == path.stem.lower()
    assert hw.load_device(spec.name) is spec            # by name == by path, cached
    assert spec.kind in hw.DEVICE_KINDS and spec.arch_family in hw.ARCH_FAMILIES
    assert spec.source.strip() and "#" in path.read_text()   # cites a source, comments units
    # units plausible, cross-checked against each other
    assert 1e-4 < spec.mem_bytes / spec.mem_bw_bytes_per_s < 10      # s to read all memory
    for dtype, flops in spec.peak_flops.items():
        assert dtype in hw.DTYPES and 1e11 <= flops <= 1e16
        ridge = flops / spec.mem_bw_bytes_per_s                         # FLOP per byte
        assert 1 <= ridge <= 2000, (dtype, ridge)
    assert spec.peak_flops_for("fp32") == spec.peak_flops["fp32"]
    assert spec.clock_hz * spec.compute_units * 2 <= spec.peak_flops["fp32"] * 1.01 or (
        spec.kind == "gpu")                                             # CPU peaks >= 2 FLOP/cycle
    assert 1 <= spec.tdp_w <= 2000 and spec.price_usd_per_hour >= 0
    assert spec.idle_power_w is None or spec.idle_power_w < spec.tdp_w
    assert hw.load_link(spec.host_link).kind == "pcie"
    if spec.kind == "gpu":
        assert spec.remote_mem_bw_bytes_per_s is None and spec.local_mem_latency_s is None
        assert spec.peak_flops_for("fp16") > spec.peak_flops["fp32"]
        assert spec.peak_flops_for("bf16") > 0                           # native or fp16 fallback
    else:
        assert 0 < spec.remote_mem_bw_bytes_per_s < spec.mem_bw_bytes_per_s
        assert 0 < spec.local_mem_latency_s < spec.remote_mem_latency_s < 1e-6


def test_aliases_are_unique_and_resolve():
    seen: dict[str, str] = {}
    for name in hw.list_devices():
        spec = hw.load_device(name)
        for key in (spec.name, *spec.aliases):
            norm = re.sub(r"[\s_\-]", "", key).lower()
            assert seen.setdefault(norm, spec.name) == spec.name, key
            assert hw.load_device(key) is spec
    assert hw.load_device("rtx 3090").name == "RTX3090"
    assert hw.load_device("v100-sxm2-32gb").name == "V100"


# ------------------------------------------------------------------ contract: links and nodes
@pytest.mark.parametrize("path", LINK_FILES, ids=_ids(LINK_FILES))
def test_link_contract(path: Path):
    link = hw.load_link(path)
    assert link.name.lower() == path.stem.lower() and link.source.strip()
    assert link.kind in hw.LINK_KINDS
    assert 1e9 <= link.bw_bytes_per_s <= 1e12 and 1e-9 <= link.latency_s <= 1e-4
    assert link.transfer_time_s(0) == link.latency_s
    assert link.transfer_time_s(link.bw_bytes_per_s) == pytest.approx(1 + link.latency_s)


@pytest.mark.parametrize("path", NODE_FILES, ids=_ids(NODE_FILES))
def test_node_contract(path: Path):
    node = hw.load_node(path)
    assert node.name.lower() == path.stem.lower() and node.source.strip()
    assert node.devices or node.sockets
    for spec_name, count in node.devices + node.sockets:
        assert count >= 1 and hw.load_device(spec_name)
    for name, _ in node.sockets:
        assert hw.load_device(name).kind == "cpu"
    for link in (node.intra_link, node.inter_node_link, node.host_link, node.socket_link):
        assert link is None or hw.load_link(link)
    assert (node.socket_link is not None) == (sum(c for _, c in node.sockets) > 1)
    assert len(node.device_names) == node.num_devices


def test_node_templates_hold_the_papers_setups():
    dgx = hw.load_node("DGX-H100")
    assert dgx.devices == (("H100-SXM", 8),) and dgx.intra_link == "NVLink4"
    assert hw.load_link(dgx.inter_node_link).bw_bytes_per_s == 50e9
    hllm = hw.load_node("2s-xeon-6148")
    assert hllm.sockets == (("Xeon-Gold-6148", 2),) and hllm.socket_link == "UPI-10.4"
    assert hw.load_node("pcie-a100x2-p100x2").device_names.count("P100") == 2


# ------------------------------------------------------------------ datasheet figures
@pytest.mark.parametrize("name, field, value", [
    ("A100-80GB", "mem_bw_bytes_per_s", 2.039e12), ("A100-40GB", "mem_bw_bytes_per_s", 1.555e12),
    ("H100-SXM", "mem_bw_bytes_per_s", 3.35e12), ("H200", "mem_bw_bytes_per_s", 4.8e12),
    ("V100", "mem_bw_bytes_per_s", 900e9), ("P100", "mem_bw_bytes_per_s", 732e9),
    ("L4", "tdp_w", 72), ("L40S", "mem_bw_bytes_per_s", 864e9), ("RTX4090", "tdp_w", 450),
    ("Xeon-Gold-6148", "compute_units", 20), ("EPYC-9654", "compute_units", 96),
])
def test_datasheet_figures(name, field, value):
    assert getattr(hw.load_device(name), field) == value


def test_peaks_dense_and_dtype_fallbacks():
    assert hw.load_device("H100-SXM").peak_flops_for("bfloat16") == 989.4e12
    assert hw.load_device("A100-80GB").peak_flops_for("bf16") == 312e12
    p100 = hw.load_device("P100")
    assert "bf16" not in p100.peak_flops and p100.peak_flops_for("bf16") == 18.7e12
    assert hw.load_device("V100").peak_flops_for("bf16") == 125e12
    with pytest.raises(ValueError, match=r"Xeon-Gold-6148.*fp16"):
        hw.load_device("Xeon-Gold-6148").peak_flops_for("fp16")
    with pytest.raises(ValueError, match="unknown dtype"):
        p100.peak_flops_for("fp7")


# ------------------------------------------------------------------ hypothetical devices
def test_with_overrides_makes_a_validated_hypothetical_device():
    base = hw.load_device("H100-SXM")
    new = base.with_overrides(mem_bw_bytes_per_s=6e12, peak_flops_fp8=0, mem_bytes=192e9)
    assert new.name == base.name and new.mem_bw_bytes_per_s == 6e12
    assert new.mem_bytes == 192_000_000_000 and isinstance(new.mem_bytes, int)
    assert "fp8" not in new.peak_flops and "overridden" in new.source
    assert new != base and hash(new) != hash(base) and base.mem_bw_bytes_per_s == 3.35e12
    assert base.with_overrides() == base
    with pytest.raises(InputError, match=r"mem_bw_bytes_per_s.*GB/s"):
        base.with_overrides(mem_bw_bytes_per_s=3350)
    with pytest.raises(InputError, match=r"bytes_per_sec.*did you mean 'mem_bw_bytes_per_s'"):
        base.with_overrides(mem_bw_bytes_per_sec=1e12)
    with pytest.raises(TypeError):
        base.peak_flops["fp32"] = 1.0
    assert pickle.loads(pickle.dumps(new)) == new


# ------------------------------------------------------------------ bad input names file and field
def _device_file(tmp_path: Path, edit=lambda text: text, stem="h100-sxm") -> Path:
    text = (ROOT / "devices" / "h100-sxm.toml").read_text()
    path = tmp_path / f"{stem}.toml"
    path.write_text(edit(text))
    return path


def _raises(path: Path, field: str, *fragments: str) -> str:
    with pytest.raises(InputError) as info:
        hw.load_device(path)
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message, message
    assert info.value.field == field and info.value.file == str(path)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_unit_typo_suggests_the_unit(tmp_path):
    path = _device_file(tmp_path, lambda t: t.replace("= 3.35e12", "= 3350"))
    _raises(path, "mem_bw_bytes_per_s", "bytes/s", "GB/s", "3350e9")
    path = _device_file(tmp_path, lambda t: t.replace("= 85_899_345_920", "= 80"))
    _raises(path, "mem_bytes", "GB", "80e9")
    path = _device_file(tmp_path, lambda t: t.replace("clock_hz = 1.98e9", "clock_hz = 1980"))
    _raises(path, "clock_hz", "MHz")


def test_unknown_field_is_named(tmp_path):
    path = _device_file(tmp_path, lambda t: t.replace("tdp_w =", "tdp_watts ="))
    _raises(path, "tdp_watts", "unknown field", "did you mean 'tdp_w'")


def test_missing_field_is_named(tmp_path):
    path = _device_file(tmp_path, lambda t: re.sub(r"(?m)^mem_bw_bytes_per_s.*\n", "", t))
    _raises(path, "mem_bw_bytes_per_s", "missing required field", "bytes/s")


def test_non_numeric_value_is_named(tmp_path):
    path = _device_file(tmp_path, lambda t: t.replace("= 85_899_345_920", '= "80GB"'))
    _raises(path, "mem_bytes", "expected a number", "'80GB'")


def test_kind_and_kind_specific_fields(tmp_path):
    _raises(_device_file(tmp_path, lambda t: t.replace('"gpu"', '"tpu"')), "kind", "gpu, cpu")
    _raises(_device_file(tmp_path, lambda t: t + "local_mem_latency_s = 90e-9\n"),
            "local_mem_latency_s", "only applies to kind 'cpu'")
    _raises(_device_file(tmp_path, lambda t: t.replace('"gpu"', '"cpu"')),
            "remote_mem_bw_bytes_per_s", "required for kind 'cpu'")
    _raises(_device_file(tmp_path, lambda t: t.replace("peak_flops_fp8", "peak_flops_fp9")),
            "peak_flops_fp9", "unknown field")


def test_name_must_match_file_stem(tmp_path):
    _raises(_device_file(tmp_path, stem="h100-copy"), "name", "h100-copy")


def test_invalid_toml_names_the_line(tmp_path):
    path = _device_file(tmp_path, lambda t: t.replace("tdp_w = 700", "tdp_w = = 700"))
    with pytest.raises(InputError, match="not valid TOML") as info:
        hw.load_device(path)
    assert info.value.file == str(path) and info.value.line is not None


def test_unknown_names_list_the_known_ones():
    with pytest.raises(InputError, match=r"unknown device 'H100-SXN'.*H100-SXM.*P100"):
        hw.load_device("H100-SXN")
    with pytest.raises(InputError, match=r"unknown link.*NVLink4"):
        hw.load_link("NVLink9")
    with pytest.raises(InputError, match=r"unknown node.*dgx-h100"):
        hw.load_node("dgx-z100")


def test_link_latency_typo(tmp_path):
    path = tmp_path / "nvlink4.toml"
    path.write_text((ROOT / "links" / "nvlink4.toml").read_text().replace("2e-6", "2"))
    with pytest.raises(InputError, match=r"latency_s.*µs.*2e-6") as info:
        hw.load_link(path)
    assert info.value.file == str(path)


def test_node_with_unknown_device_names_entry(tmp_path):
    path = tmp_path / "dgx-h100.toml"
    text = (ROOT / "nodes" / "dgx-h100.toml").read_text()
    path.write_text(text.replace('"H100-SXM"', '"H100-SMX"'))
    with pytest.raises(InputError, match=r"devices\[0\]\.spec.*unknown device 'H100-SMX'") as info:
        hw.load_node(path)
    assert info.value.file == str(path)


# ------------------------------------------------------------------ registry location and cache
def test_hwspecs_env_adds_a_folder_in_front_of_the_bundled_one(tmp_path, monkeypatch):
    (tmp_path / "devices").mkdir()
    _device_file(tmp_path / "devices", lambda t: t.replace('"H100-SXM"', '"MyGPU"'), stem="mygpu")
    bundled = set(hw.list_devices())
    monkeypatch.setenv("SIMCLUSTER_HWSPECS", str(tmp_path))
    assert hw.hwspecs_dir() == tmp_path.resolve()
    assert set(hw.list_devices()) == bundled | {"MyGPU"}
    assert hw.load_device("mygpu").tdp_w == 700 and hw.load_device("H100-SXM").tdp_w == 700
    # the bundled measured tables are still found: no silent fall-back to the datasheet
    from simcluster.calibration import load_calibration
    assert "own tables" in load_calibration("measured").provenance(hw.load_device("H100-SXM"))
    with pytest.raises(InputError, match=r"unknown device 'MyGPUU' \(did you mean 'MyGPU'"):
        hw.load_device("MyGPUU")


def test_hwspecs_env_file_shadows_the_bundled_one(tmp_path, monkeypatch):
    (tmp_path / "devices").mkdir()
    _device_file(tmp_path / "devices", lambda t: t.replace("price_usd_per_hour = 3.348",
                                                           "price_usd_per_hour = 9.5"),
                 stem="h100-sxm")
    monkeypatch.setenv("SIMCLUSTER_HWSPECS", str(tmp_path))
    assert hw.load_device("H100-SXM").price_usd_per_hour == 9.5
    assert hw.list_devices().count("H100-SXM") == 1
    # a run says which spec the name read (it said only 'H100-SXM: own tables')
    from simcluster.cost import CostModel
    from simcluster.simulation.results import format_provenance
    from simcluster.simulation.simulation import cost_provenance
    prov = cost_provenance(CostModel(), [hw.load_device("H100-SXM"), hw.load_device("L4")])
    mine = str((tmp_path / "devices" / "h100-sxm.toml").resolve())
    assert prov["specs"] == {"H100-SXM": mine}
    assert f"H100-SXM: spec {mine} (SIMCLUSTER_HWSPECS)" in format_provenance(prov)
    from simcluster.cli.simulate import _device_rows
    rows = {r[0]: r for r in _device_rows()}
    assert rows["name"][-1] == "spec" and rows["H100-SXM"][-1] == "SIMCLUSTER_HWSPECS"
    assert rows["L4"][-1] == "bundled"
    monkeypatch.delenv("SIMCLUSTER_HWSPECS")
    assert "specs" not in cost_provenance(CostModel(), [hw.load_device("H100-SXM")])
    assert _device_rows()[0][-1] == "tdp_W"


def test_hwspecs_env_errors_name_the_folder_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLUSTER_HWSPECS", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="SIMCLUSTER_HWSPECS.*nowhere"):
        hw.list_devices()
    # the environment's mistake, not the experiment's: it was "default.toml: field
    # 'cost.calibration': SIMCLUSTER_HWSPECS: SIMCLUSTER_HWSPECS names ..."
    from simcluster.experiment import load_experiment
    with pytest.raises(InputError) as err:
        load_experiment()
    assert str(err.value).startswith("the environment variable SIMCLUSTER_HWSPECS names '")
    assert "default.toml" not in str(err.value)
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "bad.toml").write_text("name = \n")
    monkeypatch.setenv("SIMCLUSTER_HWSPECS", str(tmp_path))
    with pytest.raises(InputError, match="bad.toml:1: not valid TOML"):
        hw.list_devices()


def test_cache_sees_edited_files(tmp_path):
    path = _device_file(tmp_path)
    first = hw.load_device(path)
    assert hw.load_device(path) is first
    path.write_text(path.read_text().replace("tdp_w = 700", "tdp_w = 750"))
    os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 1_000_000, first_ns))
    assert hw.load_device(path).tdp_w == 750
