"""Hels: an engine model for the per-step floor of the source's vLLM prototype.

The Hels prototype runs on vLLM (PyTorch 2.1.2, CUDA 12.4). Its TPOTs (0.035-0.085 s) sit a
roughly constant ~20-30 ms above what a datasheet roofline gives for the same splits: a vLLM
decode step of that era pays host work (the scheduler, block tables, sampling, Python), eager
kernel launches and NCCL latencies that do not shrink with the model's share per GPU.

:func:`vllm_floor_terms` measures that floor from *published measurements*, not from the Hels
numbers: DistServe's profile of vLLM on A100-80GB (OPT-13B and OPT-66B at TP 1/2/4/8,
``decoding_smallbs`` and ``prefill`` coefficients; github.com/LLMServe/DistServe,
``simdistserve/estimators/profile_data/profiler-a100-80g.vllm.json``, commit 82831f16;
copied below). For each profiled shape it subtracts the datasheet roofline of the same step
(same model, TP degree, A100-80GB SXM over NVLink3) and fits what is left:

* decode: ``floor = iteration + sequence x batch`` over batches 1-64 and contexts 128-2,048
  tokens (DistServe's small-batch regime; its large-batch coefficients also fold in slower
  attention kernels, which are not a floor);
* prefill: ``floor = iteration + token x prompt tokens`` over single prompts of 128-2,048.

At TP 4 the decode floor is 21.8 ms plus 0.03 ms per sequence for OPT-13B (largest residual
1.8 ms), and 21.9 ms for OPT-66B: a constant per step, not per layer. The Hels fleets are
4-GPU TP groups, so the TP-4 OPT-13B fit (same 40 layers and 5,120 hidden size as
Llama-2-13B) gives their engine terms (:func:`hels_engine`). It was measured on NVLink
A100s; the source's groups spanned PCIe and hosts, whose collective latencies the cost model
prices separately on the group's link.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simcluster.cost import CostModel, Layout
from simcluster.engines.model import EngineCostModel, EngineTerms
from simcluster.hardware import load_device, load_link
from simcluster.models import model_preset

#: DistServe's fitted vLLM latency model on A100-80GB (ms): decode step = a + b * sum of
#: context tokens + c * batch (``decoding_smallbs``, batches below 95); prefill = a + b *
#: sum L + c * sum L^2. Copied from profiler-a100-80g.vllm.json (see module docstring).
DISTSERVE_VLLM_A100 = {
    ("opt-13b", 1): {"decode": (23.475041008414784, 0.000592934466077393, 0.060726861260369455),
                     "prefill": (22.052204789310185, 0.14050923870128956, 8.076584822611088e-06)},
    ("opt-13b", 2): {"decode": (24.54058424191086, 0.00022440145424035404, 0.08715787269447899),
                     "prefill": (27.440806247810684, 0.0905453268062731, 8.452054313246025e-06)},
    ("opt-13b", 4): {"decode": (25.90114444283343, 7.753634454230709e-05, 0.05528087160867803),
                     "prefill": (30.536322590049405, 0.05150644936810146,
                                 4.232473132942393e-07)},
    ("opt-66b", 4): {"decode": (39.58178936012414, 0.0006945721692406896, 0.13580868185596764),
                     "prefill": (42.965489361973944, 0.2128658422785494,
                                 4.601017396226869e-05)},
}
_EMPTY = np.zeros(0, dtype=np.int64)


def _timer(model_name: str, tp: int, cost_model: CostModel):
    link = load_link("NVLink3") if tp > 1 else None
    return cost_model.timer(model_preset(model_name),
                            Layout.uniform(load_device("A100-80GB"), tp=tp, link=link))


def vllm_floor_fit(model_name: str = "opt-13b", tp: int = 4,
                   cost_model: CostModel | None = None) -> dict:
    """Fit the per-step floor of vLLM (DistServe's profile minus the roofline) for one model
    and TP degree. Returns the terms (seconds) and the fit's largest residuals."""
    cost_model = cost_model or CostModel()
    coef = DISTSERVE_VLLM_A100[(model_name, tp)]
    timer = _timer(model_name, tp, cost_model)
    X, y = [], []
    a, b, c = coef["decode"]
    for bs in (1, 2, 4, 8, 16, 32, 64):
        for ctx in (128, 256, 512, 1024, 2048):
            X.append((1.0, bs))
            y.append((a + b * bs * ctx + c * bs) / 1e3
                     - timer.time(_EMPTY, _EMPTY, bs, bs * ctx, bs))
    dec, dres = _lstsq(X, y)
    X, y = [], []
    a, b, c = coef["prefill"]
    for n in (128, 256, 512, 1024, 2048):
        X.append((1.0, n))
        y.append((a + b * n + c * n * n) / 1e3 - timer.time(np.array([n]), np.array([0]), 0, 0,
                                                              1))
    pre, pres = _lstsq(X, y)
    return {"model": model_name, "tp": tp, "decode_iteration": dec[0],
            "decode_sequence": max(dec[1], 0.0), "prefill_iteration": pre[0],
            "prefill_token": max(pre[1], 0.0), "decode_max_residual_s": dres,
            "prefill_max_residual_s": pres}


def _lstsq(X, y):
    X, y = np.asarray(X), np.asarray(y)
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    return coef, float(np.abs(y - X @ coef).max())


def floor_table(cost_model: CostModel | None = None) -> pd.DataFrame:
    """The floor fitted for every profiled (model, TP degree): how it grows with TP and
    whether it grows with the model."""
    return pd.DataFrame([vllm_floor_fit(m, tp, cost_model) for m, tp in DISTSERVE_VLLM_A100])


def hels_engine(cost_model: CostModel | None = None, calibration="datasheet") -> EngineCostModel:
    """An engine model for the Hels prototype's 4-GPU vLLM groups: the TP-4 OPT-13B floor
    (:func:`vllm_floor_fit`) on top of ``calibration``'s device time."""
    fit = vllm_floor_fit("opt-13b", 4, cost_model)
    terms = EngineTerms(decode_iteration=fit["decode_iteration"],
                        decode_sequence=fit["decode_sequence"],
                        prefill_iteration=max(fit["prefill_iteration"], 0.0),
                        prefill_token=fit["prefill_token"])
    return EngineCostModel(terms, calibration, name="vllm-floor-a100-tp4 (DistServe profile)")
