"""hLLM analyses and experiments: decode speed ratio, bucketed prefill, the Azure comparison."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from simcluster import workload as wl
from simcluster.experiment import experiments_dir, load_experiment
from simcluster.hardware import load_device
from simcluster.analysis.hllm import (SOURCE_RATIOS, best_decode_throughput, decode_ratio_curve,
                             prefill_throughput, serving_row)
from simcluster.models import model_preset


@pytest.fixture(scope="module")
def devices():
    return load_device("A100-80GB-PCIe"), load_device("Xeon-Gold-6148")


def test_decode_ratio_falls_toward_the_bandwidth_ratio(devices):
    gpu, cpu = devices
    model = dataclasses.replace(model_preset("llama-2-7b"), max_position=32768)
    curve = decode_ratio_curve(model, gpu, cpu, [512, 2048, 8192, 24576])
    assert np.all(np.diff(curve.ratio) < 0)
    bw = gpu.mem_bw_bytes_per_s / cpu.mem_bw_bytes_per_s
    long = curve.set_index("context").ratio
    # at 24k tokens both devices stream KV: the ratio is near the bandwidth ratio (15.1),
    # and near the source's 13.5
    assert 0.7 * bw < long[24576] < 1.1 * bw
    assert long[24576] == pytest.approx(SOURCE_RATIOS[24576], rel=0.15)
    # at 512 tokens the datasheet CPU is compute-bound in fp32: ratio well above bandwidth
    assert long[512] > 2 * bw


def test_best_batch_fits_memory(devices):
    gpu, _ = devices
    model = model_preset("llama-3.1-8b")
    r = best_decode_throughput(model, gpu, 8192)
    assert 1 <= r["batch"] and r["batch"] * 8193 <= r["kv_capacity_tokens"]
    capped = best_decode_throughput(model, gpu, 128, max_batch=16)
    assert capped["batch"] <= 16
    assert capped["tokens_per_s"] < best_decode_throughput(model, gpu, 128)["tokens_per_s"]


def test_similar_lengths_prefill_faster_only_when_padded(devices):
    gpu, _ = devices
    rng = np.random.default_rng(1)
    prompts = np.clip(rng.lognormal(np.log(800), 0.8, 300), 16, 4000).astype(int)
    model = model_preset("llama-2-13b")
    rnd = prefill_throughput(prompts, model, gpu, batch=8)
    sim = prefill_throughput(prompts, model, gpu, batch=8, bucketed=True)
    assert sim["queries_per_s"] > 1.4 * rnd["queries_per_s"]
    assert rnd["mean_batch"] == pytest.approx(8, rel=0.05)
    flat_r = prefill_throughput(prompts, model, gpu, batch=8, padded=False)
    flat_s = prefill_throughput(prompts, model, gpu, batch=8, padded=False, bucketed=True)
    assert flat_s["queries_per_s"] == pytest.approx(flat_r["queries_per_s"], rel=0.05)


HLLM_TOMLS = sorted(p.name for p in experiments_dir().glob("hllm_*.toml"))


@pytest.mark.parametrize("name", HLLM_TOMLS)
def test_hllm_experiments_load(name):
    exp = load_experiment(name)
    assert exp.trace.name and len(exp.trace) > 10_000
    assert exp.instances[0].layout.devices[0].name == "A100-80GB-PCIe"
    assert exp.instances[0].count == 1                  # equal GPU count in every variant


def _short(name, seconds=90.0):
    exp = load_experiment(name)
    return dataclasses.replace(exp, trace=wl.time_window(exp.trace, 0.0, seconds))


def test_hllm_offload_on_a_window_of_the_trace():
    sim = _short("hllm_azure_conv.toml").simulation()
    res = sim.run()
    req = res.requests
    assert not req.rejected.any() and req.finish_s.notna().all()
    # every request with more than one output token decoded on a CPU socket
    sockets = {i.id for i in sim.cluster.decode_pool}
    multi = req[req.output_tokens > 1]
    assert multi.instance.isin(sockets).all()
    ctl = sim.cluster.controller
    assert len(ctl.decisions) >= 2 and ctl.active_over_time().active.max() <= 12
    row = serving_row(sim, res)
    assert row["sockets"] == 12 and 0 < row["sockets_active_mean"] <= 12
    assert 0 <= row["cpu_idle_fraction"] <= 1
    assert row["usd_per_m_tokens_active"] <= row["usd_per_m_tokens"]
    base = _short("hllm_azure_conv_gpu_only.toml").simulation()
    brow = serving_row(base, base.run())
    assert brow["finished"] == row["finished"]
    # decode on a 6148 socket is an order of magnitude slower per token than on the A100
    assert row["tpot_p50_s"] > 5 * brow["tpot_p50_s"]


def test_numa_oblivious_is_slower_than_aware():
    tpot = {}
    for name in ("hllm_azure_conv_static.toml", "hllm_azure_conv_oblivious.toml"):
        exp = _short(name, 60.0)
        d = dict(exp.disaggregation, controller=None)   # same sockets, no sizing
        sim = dataclasses.replace(exp, disaggregation=d).simulation()
        tpot[name] = sim.run().requests.tpot_s.mean()
    assert tpot["hllm_azure_conv_oblivious.toml"] > 1.1 * tpot["hllm_azure_conv_static.toml"]


def test_unknown_numa_placement_is_named(tmp_path: Path):
    text = (experiments_dir() / "hllm_azure_conv.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('numa = "aware"', 'numa = "nearby"').replace(
        'source = "azure-conv"', 'source = "azure-conv"\nfirst_n = 20'))
    with pytest.raises(KeyError, match="aware.*interleave.*oblivious|known"):
        load_experiment(bad).simulation()
