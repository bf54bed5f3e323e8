"""Parametric accelerators: derived peaks, area, cost and power, and the tile model."""

import dataclasses

import numpy as np
import pytest

from simcluster.calibration import NEUTRAL, load_calibration
from simcluster.calibration.tiles import TileModel
from simcluster.cost import Batch, CostModel, Layout
from simcluster.errors import InputError
from simcluster.hardware import load_device
from simcluster.hardware.area import RETICLE_LIMIT_MM2, die_area
from simcluster.hardware.designed import designed_device
from simcluster.hardware.parametric import (DESIGN_SPACE, H100_PREFILL_ROW, LLMSHARE_DECODE_ROW,
                                            LLMSHARE_PREFILL_ROW, AcceleratorDesign, parse_row)
from simcluster.hardware.power import power_profile
from simcluster.hardware.tco import design_cost, die_yield, dies_per_wafer
from simcluster.models import model_preset

H100_ROW = parse_row(H100_PREFILL_ROW)


def test_h100_row_peaks_within_10_percent_of_the_h100_sxm():
    spec, d = load_device("H100-SXM"), H100_ROW.design
    assert H100_ROW.servers == 7 and d.devices_per_server == 8
    assert d.matrix_flops == pytest.approx(132 * 4 * 16 * 16 * 2 * 2 * 1.83e9)
    assert d.matrix_flops == pytest.approx(spec.peak_flops_for("bf16"), rel=0.10)
    assert d.mem_bw_bytes_per_s == pytest.approx(spec.mem_bw_bytes_per_s, rel=0.10)
    assert d.link_bw_bytes_per_s == pytest.approx(450e9, rel=0.10)     # NVLink4, per direction
    assert d.memory_stacks == 5
    dev = designed_device(d)
    assert dev.peak_flops_for("bf16") == d.matrix_flops and dev.design == d
    assert dev.mem_bytes == spec.mem_bytes
    assert designed_device(d) is dev                                   # one object per design


def test_llmcompass_ga100_template_area():
    """LLMCompass's GA100 template (7 nm, 128 physical SMs, 6 HBM2e PHYs, 12 NVLink3) lands on
    A100's 826 mm^2, as in LLMCompass's own figure 6."""
    ga100 = AcceleratorDesign(4, 12, 96, 48, 128, 192, 4, 16, 32, macs_per_pe_per_cycle=1,
                              clock_hz=1.41e9, memory_technology="HBM2e",
                              link_generation="NVLink3", process_node="7nm")
    assert die_area(ga100).total_mm2 == pytest.approx(826, rel=0.02)
    assert 108 * 4 * 16 * 16 * 2 * 1.41e9 == pytest.approx(312e12, rel=0.01)


UNITS = ["links_per_device", "memory_gb", "global_buffer_mb", "cores", "local_buffer_kb",
         "lanes", "array_height", "vector_width"]


@pytest.mark.parametrize("field", UNITS)
def test_area_and_cost_grow_with_every_unit(field):
    base = H100_ROW.design
    sizes = DESIGN_SPACE[field]
    designs = [dataclasses.replace(base, **{field: v}) for v in sizes]
    areas = [die_area(d).total_mm2 for d in designs]
    costs = [design_cost(d).device_usd for d in designs]
    servers = [design_cost(d).server_price_usd for d in designs]
    assert all(b >= a for a, b in zip(areas, areas[1:])), areas
    assert all(b >= a for a, b in zip(costs, costs[1:])), costs
    assert all(b >= a for a, b in zip(servers, servers[1:])), servers
    assert areas[-1] > areas[0] or field == "memory_gb" and costs[-1] > costs[0]


def test_yield_and_wafer_anchors():
    assert die_yield(0.0, 0.002) == 1.0
    assert die_yield(800, 0.002) < die_yield(400, 0.002)
    assert dies_per_wafer(100) > 2 * dies_per_wafer(200) * 0.9
    with pytest.raises(ValueError):
        dies_per_wafer(80000)


def test_h100_like_server_within_30_percent_of_public_price():
    cost = design_cost(H100_ROW.design)
    assert cost.server_price_usd == pytest.approx(270_000, rel=0.30)   # SemiAnalysis DGX H100
    assert cost.fits_reticle and cost.server_power_w == pytest.approx(10_200)
    per_gpu_hour = cost.usd_per_hour / 8
    cloud = load_device("H100-SXM").price_usd_per_hour
    assert cloud / 4 < per_gpu_hour < cloud      # an owner's cost, below a cloud list price


def test_a_die_beyond_the_reticle_is_split_into_chiplets():
    big = parse_row(LLMSHARE_PREFILL_ROW).design
    assert die_area(big).total_mm2 > RETICLE_LIMIT_MM2
    assert design_cost(big).chiplets == 2


def test_power_profiles_gpus_cpus_and_designs():
    h100 = power_profile(load_device("H100-SXM"))
    assert (h100.idle_w, h100.prefill_w, h100.decode_w) == (75, 700, 380)
    a100 = power_profile(load_device("A100-80GB"))
    assert (a100.idle_w, a100.prefill_w, a100.decode_w) == (63, 400, 250)
    cpu = load_device("Xeon-Gold-6148")
    p = power_profile(cpu)
    assert p.prefill_w == cpu.tdp_w and 0 < p.idle_w < p.decode_w < p.prefill_w
    ref = power_profile(designed_device(H100_ROW.design))
    assert ref.idle_w == pytest.approx(75) and ref.prefill_w == pytest.approx(700)
    assert ref.decode_w == pytest.approx(380)
    assert p.energy_j(10, 2, 3) == pytest.approx(10 * p.idle_w + 2 * p.prefill_w + 3 * p.decode_w)


def test_bad_design_parameters_name_the_field():
    with pytest.raises(InputError, match="cores"):
        dataclasses.replace(H100_ROW.design, cores=0)
    with pytest.raises(InputError, match="memory_technology.*HBM3"):
        dataclasses.replace(H100_ROW.design, memory_technology="HBM9")
    with pytest.raises(InputError, match="10 numbers"):
        parse_row("1,2,3")
    with pytest.raises(InputError, match="expected a number"):
        parse_row("7,8,18,80,50,x,256,4,16,32")
    with pytest.raises(InputError, match="expected a number"):
        parse_row("7,8,18,80,50,inf,256,4,16,32")
    with pytest.raises(InputError, match="whole number"):
        parse_row("7,8,18,80,50,132.5,256,4,16,32")
    with pytest.raises(InputError, match="clock_ghz"):
        parse_row(H100_PREFILL_ROW, clock_ghz=2)
    with pytest.raises(InputError, match="unknown design parameter"):
        H100_ROW.design.with_overrides(cache_mb=3)


@pytest.mark.parametrize("row", [H100_PREFILL_ROW, LLMSHARE_PREFILL_ROW, LLMSHARE_DECODE_ROW])
@pytest.mark.parametrize("b", [1, 2])
def test_gemm_rows_past_every_tile_take_the_shared_tiling_bit_for_bit(row, b):
    """A block of GEMM rows all at least the largest tile's (m >= 512) computes the tilings
    once for every row; a block with one small row (m = 1) prepended goes the general way:
    the other rows' times are the same floats."""
    tm = TileModel(parse_row(row).design, b)
    for n, k in [(12288, 12288), (4096, 11008), (1536, 12288), (128, 64), (64, 8192)]:
        for lo in (512, 1024, 8192):
            ms = np.arange(lo, lo + 256)
            shared = tm._gemm_times(ms, n, k)
            general = tm._gemm_times(np.r_[1, ms], n, k)[1:]
            assert shared.tobytes() == general.tobytes(), (n, k, lo)


def test_buffers_matter_where_physically_true():
    d = H100_ROW.design
    shape = (4096, 12288, 12288)
    small_gb = TileModel(d.with_overrides(global_buffer_mb=20)).gemm(*shape)
    big_gb = TileModel(d.with_overrides(global_buffer_mb=110)).gemm(*shape)
    small_lb = TileModel(d.with_overrides(local_buffer_kb=64)).gemm(*shape)
    assert small_gb > 1.3 * TileModel(d).gemm(*shape) > 1.3 * big_gb * 0.9
    assert small_lb > 1.3 * TileModel(d).gemm(*shape)
    # a weight-streaming decode GEMM is bound by DRAM whatever the buffers
    decode = [TileModel(d.with_overrides(global_buffer_mb=g, local_buffer_kb=lb)).gemm(
        8, 12288, 12288) for g in (20, 110) for lb in (64, 512)]
    assert max(decode) == pytest.approx(min(decode), rel=0.02)
    # off-chip traffic falls as the global buffer grows, to the ideal once a matrix fits
    traffic = [TileModel(d.with_overrides(global_buffer_mb=g)).dram_bytes_gemm(
        [16384], 12288, 12288)[0] for g in (20, 50, 110, 4096)]
    assert traffic == sorted(traffic, reverse=True)
    assert traffic[-1] == 2 * (16384 * 12288 * 2 + 12288 * 12288)
    # attention re-reads K/V per query tile once the heads in flight overflow the buffer
    attn = [TileModel(d.with_overrides(local_buffer_kb=lb)).attn_prefill(
        [2048] * 4, [0] * 4, 12, 12, 128, [2.5e7] * 4).sum() for lb in (64, 256)]
    assert attn[0] > attn[1]


def test_tile_calibration_drives_the_same_cost_model():
    """A designed device goes through CostModel like any device; the measured calibration
    routes it to the tile model, the datasheet one to its derived peaks."""
    dev = designed_device(H100_ROW.design)
    model = model_preset("gpt-3-175b")
    layout = Layout.uniform(dev, tp=8, link=H100_ROW.design.link_spec())
    batch = Batch(prefill_tokens=(1024, 512), decode_context=(700,) * 16)
    measured = CostModel(load_calibration("measured")).iteration(model, layout, batch)
    roofline = CostModel(NEUTRAL).iteration(model, layout, batch)
    assert "tile model" in measured.provenance
    assert measured.time_s > roofline.time_s > 0
    timer = CostModel(load_calibration("measured")).timer(model, layout)
    steps = timer.decode_steps(16, 16 * 700, 5)
    assert np.all(np.diff(steps) >= 0) and len(steps) == 5
    one = timer.time(np.array([300]), np.array([0]), 0, 0, 1)
    assert one == pytest.approx(CostModel(load_calibration("measured")).iteration(
        model, layout, Batch(prefill_tokens=(300,))).time_s)


@pytest.mark.parametrize("model_name", ["llama-2-70b", "gpt-3-175b"])
def test_h100_row_iterations_within_15_percent_of_the_h100_spec(model_name):
    from simcluster.hardware import load_link
    cost = CostModel(load_calibration("measured"))
    model = model_preset(model_name)
    design = designed_device(H100_ROW.design)
    ld = Layout.uniform(design, tp=8, link=H100_ROW.design.link_spec())
    lh = Layout.uniform(load_device("H100-SXM"), tp=8, link=load_link("NVLink4"))
    for batch in (Batch((512,)), Batch((1024,) * 4), Batch(decode_context=(1024,) * 8),
                  Batch(decode_context=(512,) * 128)):
        ratio = cost.iteration(model, ld, batch).time_s / cost.iteration(model, lh, batch).time_s
        assert ratio == pytest.approx(1.0, abs=0.15), (batch, ratio)


def test_llmshare_rows_parse():
    p, d = parse_row(LLMSHARE_PREFILL_ROW), parse_row(LLMSHARE_DECODE_ROW)
    assert (p.servers, p.design.devices_per_server, p.design.array_height) == (4, 4, 128)
    assert (d.servers, d.design.devices_per_server, d.design.lanes) == (6, 12, 2)
    assert p.row == LLMSHARE_PREFILL_ROW and d.devices == 72


def test_designed_device_names_what_it_takes():
    """designed_device('7,8,...') raised AttributeError 'str' object has no attribute
    'process_node'; a PoolDesign the same: both say what goes there."""
    from simcluster.hardware.designed import designed_device
    from simcluster.hardware.parametric import parse_row
    pool = parse_row("7,8,18,80,50,132,256,4,16,32")
    assert designed_device(pool.design).name == "design[8,18,80,50,132,256,4,16,32]"
    with pytest.raises(TypeError, match=r"expected an AcceleratorDesign \(parse_row\(ROW\)"):
        designed_device("8,18,80,50,132,256,4,16,32")
    with pytest.raises(TypeError, match=r"a PoolDesign's is \.design\); got PoolDesign"):
        designed_device(pool)


def test_designs_name_a_part_of_the_wrong_type():
    """PoolDesign(1, 'x') and ServingDesign('x', 'y') were accepted, and evaluate_design then
    raised AttributeError ('prefill'); a trace's name there was measured as len('azure-conv')
    requests where a design did not fit."""
    import pytest

    from simcluster.hardware.parametric import PoolDesign, ServingDesign, parse_row
    from simcluster.simulation.design import evaluate_design
    with pytest.raises(TypeError, match="PoolDesign.design: expected an AcceleratorDesign"):
        PoolDesign(1, "x")
    with pytest.raises(TypeError, match="ServingDesign.prefill: expected a PoolDesign"):
        ServingDesign("x", parse_row("1,8,18,80,50,132,256,4,16,32"))
    with pytest.raises(TypeError, match="design: expected a ServingDesign"):
        evaluate_design("x", "azure-conv", "llama-2-7b")
    tiny = parse_row("1,1,18,1,50,132,256,4,16,32")      # 1 GB: Llama-2-7B cannot fit
    ev = evaluate_design(ServingDesign(tiny, tiny), "azure-code", "llama-2-7b")
    assert not ev.feasible and ev.requests == 8819 and ev.rejected == 8819
