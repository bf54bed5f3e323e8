"""Cost model contracts: breakdowns sum to the iteration, vector decode equals stepping."""

import numpy as np
import pytest

from simcluster.calibration import load_calibration
from simcluster.cost import Batch, CostModel, Layout
from simcluster.cost.memory import memory_plan
from simcluster.hardware import load_device, load_link
from simcluster.models import list_models, model_preset


@pytest.fixture(params=["datasheet", "measured"], scope="module")
def cost(request):
    return CostModel(load_calibration(request.param))


LAYOUTS = [dict(tp=1), dict(tp=2, link="NVLink4"), dict(tp=4, pp=2, link="NVLink4")]


def _layout(tp=1, pp=1, link=None):
    return Layout.uniform(load_device("H100-SXM"), tp=tp, pp=pp,
                          link=load_link(link) if link else None)


@pytest.mark.parametrize("lay", LAYOUTS)
def test_breakdown_adds_up(cost, lay):
    model = model_preset("llama-2-13b")
    layout = _layout(**lay)
    batch = Batch(prefill_tokens=(300, 40), prefill_context=(0, 500),
                  decode_context=(100, 2000, 7))
    res = cost.iteration(model, layout, batch)
    ops = res.ops
    dev = ops[ops["rank"] >= 0].groupby(["stage", "rank"]).time_s.sum()
    total = dev.groupby(level=0).max().sum() + ops[ops["rank"] < 0].time_s.sum()
    assert res.time_s == pytest.approx(total, rel=1e-9)
    assert res.time_s > 0 and set(ops.op) >= {"gemm", "attn_prefill", "attn_decode"}


@pytest.mark.parametrize("lay", LAYOUTS)
def test_decode_steps_equal_single_steps(cost, lay):
    timer = cost.timer(model_preset("llama-3.1-8b"), _layout(**lay))
    steps = timer.decode_steps(16, 16 * 900, 50)
    single = [timer.time(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 16,
                         16 * 900 + 16 * j, 16) for j in range(50)]
    np.testing.assert_allclose(steps, single, rtol=1e-12)


def test_more_work_takes_longer(cost):
    m, lay = model_preset("llama-2-7b"), _layout()
    t = [cost.iteration(m, lay, Batch(decode_context=(1000,) * b)).time_s for b in (1, 64, 256)]
    assert t[0] < t[1] < t[2]
    p = [cost.iteration(m, lay, Batch(prefill_tokens=(n,))).time_s for n in (128, 1024, 8192)]
    assert p[0] < p[1] < p[2]


def test_batch_validation():
    with pytest.raises(ValueError, match="empty"):
        Batch()
    with pytest.raises(ValueError, match="non-negative"):
        Batch(decode_context=(-1,))
    with pytest.raises(ValueError, match=">= 1"):
        Batch(prefill_tokens=(0,))
    # 1.5 tokens was read as 1 without a word; numpy integers are whole numbers
    with pytest.raises(ValueError, match=r"Batch.decode_context must be whole numbers of "
                                         r"tokens, got \(1.5,\)"):
        Batch(decode_context=(1.5,))
    assert Batch(prefill_tokens=(np.int64(3),)).prefill_tokens == (3,)


@pytest.mark.parametrize("name", list_models())
def test_memory_plan_counts_every_weight(name):
    model = model_preset(name)
    one = memory_plan(model, Layout.uniform(load_device("H200")))
    assert one.weight_bytes == pytest.approx(model.weight_bytes, rel=0.01)
    eight = memory_plan(model, _layout(tp=4, pp=2, link="NVLink4"))
    assert eight.weight_bytes == pytest.approx(model.weight_bytes, rel=0.01)


def test_oom_names_device_and_shortfall():
    plan = memory_plan(model_preset("llama-2-70b"), _layout())
    assert plan.oom and "H100-SXM" in plan.oom[0] and "short by" in plan.oom[0]
    assert plan.kv_capacity_tokens == 0


def test_cost_models_show_one_line():
    """A notebook cell ending in a cost model shows where its times come from, not an
    object's address."""
    from simcluster.cost.analytic import PolynomialCostModel
    from simcluster.cost.moe import RoutingModel
    from simcluster.engines import load_engine
    assert repr(CostModel(load_calibration("measured"))) == (
        "<CostModel: calibration 'measured', kernels 'fused', execution graphs; "
        ".iteration(model, layout, batch), .predict_op(op, device, ...)>")
    mixed = CostModel(execution={"prefill": "eager", "decode": "graphs"},
                      routing=RoutingModel())
    assert "execution prefill eager, decode graphs, expert loads given;" in repr(mixed)
    engine = repr(load_engine("hf-cb-h200-eager-7b").cost_model())
    assert engine.startswith("<EngineCostModel 'hf-cb-h200-eager-7b': calibration 'measured', "
                             "kernels 'hf-cb', execution eager;")
    assert repr(PolynomialCostModel.constant(0.01)) == (
        "<PolynomialCostModel: prefill a, b, c = (0.01, 0.0, 0.0), decode a, b, c = "
        "(0.01, 0.0, 0.0) (seconds; no hardware)>")


def test_layouts_and_experiments_show_one_line():
    """A layout's repr spelt every device's whole spec (6,500 characters for eight GPUs), an
    experiment's the model's and every device's; both are one line now, devices in rank order
    with runs of one name counted, uneven shares shown."""
    from simcluster.experiment import load_experiment
    eight = _layout(tp=8, link="NVLink4")
    assert repr(eight) == "Layout(tp=8, pp=1, devices=[8x H100-SXM], link=NVLink4)"
    assert eight.describe() == "tp=8 pp=1 [8x H100-SXM]"
    hels = load_experiment("hels_opt30b")
    lay = hels.instances[0].layout
    assert lay.describe() == "tp=4 pp=1 [2x A100-80GB-PCIe,2x RTX3090]"
    assert "head_shares=(0.375, 0.375, 0.125, 0.125)" in repr(lay) and "kv_shares=(" in repr(lay)
    assert "ffn_shares" not in repr(_layout(tp=2, link="NVLink4"))      # even shares: not shown
    assert repr(hels) == (
        "<Experiment 'hels-opt30b-a100x2-3090x2': 2,000 requests of hels_opt30b, model OPT-30B, "
        "[1x tp=4 pp=1 [2x A100-80GB-PCIe,2x RTX3090]], router round_robin; .run(), "
        ".simulation(), .trace, .model, .instances>")
    assert ", SLO ttft 1 s, tpot 0.05 s;" in repr(load_experiment())


def test_layouts_and_cost_models_take_names():
    """Layout.uniform("H100-SXM") raised AttributeError 'str' object has no attribute 'name',
    CostModel("measured") was taken as a calibration (and failed at first use): names load
    their specs, anything else is a TypeError naming the field."""
    by_name = Layout.uniform("H100-SXM", tp=2, link="NVLink4")
    assert by_name == _layout(tp=2, link="NVLink4")
    with pytest.raises(TypeError, match="devices: expected DeviceSpecs or device names"):
        Layout.uniform(3)
    with pytest.raises(TypeError, match="link: expected a LinkSpec or a link's name"):
        Layout.uniform("H100-SXM", tp=2, link=5)
    with pytest.raises(ValueError, match="did you mean 'H100-SXM'"):
        Layout.uniform("H100-SMX")
    assert CostModel("measured").calibration is load_calibration("measured")
    with pytest.raises(ValueError, match="did you mean 'measured'"):
        CostModel("measurd")
    with pytest.raises(TypeError, match="calibration: expected a Calibration or its name"):
        CostModel(3)
