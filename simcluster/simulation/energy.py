"""Energy: each instance's devices at their idle, prefill and decode power, over the run.

An instance is in one state at a time: *prefill* during an iteration that processes prompt
tokens (compute-bound: a mixed iteration counts here), *decode* during a pure-decode iteration
or run (memory-bound), *idle* otherwise — waiting for work, for KV to arrive, or switching pools.
Its power in each state is the sum over its devices of :func:`simcluster.hardware.power.
power_profile` (Splitwise's per-GPU figures where a spec states them; GPUs and CPU sockets
alike). Energy = sum over states of power x time in that state, over the run's span (first
arrival to last finish, as the rest of the summary). Host CPUs, NICs, switches and cooling are
not counted: this is the energy of the devices that serve.
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.lazy import lazy_module
from simcluster.hardware.power import power_profile

pd = lazy_module("pandas")     # (imported when a frame is first built)

POWER_COLUMNS = ["power_idle_w", "power_prefill_w", "power_decode_w"]
ENERGY_FIELDS = ["energy_kwh", "energy_per_request_j", "energy_per_m_tokens_kwh"]


def power_columns(devices) -> dict[str, float]:
    """Instance-frame columns: the summed power of an instance's devices per state."""
    profiles = [power_profile(d) for d in devices]
    return {"power_idle_w": sum(p.idle_w for p in profiles),
            "power_prefill_w": sum(p.prefill_w for p in profiles),
            "power_decode_w": sum(p.decode_w for p in profiles)}


def state_seconds(timeline: pd.DataFrame, instances, span_s: float) -> pd.DataFrame:
    """Seconds each instance spent prefilling, decoding and idle over ``span_s``."""
    busy = timeline.end_s - timeline.start_s
    prefill = busy.where(timeline.prefill_seqs > 0, 0.0).groupby(timeline.instance).sum()
    decode = busy.where(timeline.prefill_seqs == 0, 0.0).groupby(timeline.instance).sum()
    out = pd.DataFrame({"prefill_s": prefill, "decode_s": decode}).reindex(
        instances, fill_value=0.0)
    out["idle_s"] = np.maximum(0.0, span_s - out.prefill_s - out.decode_s)
    return out


def energy_summary(timeline: pd.DataFrame, instances: pd.DataFrame, span_s: float,
                   finished: int, tokens: int) -> dict:
    """Summary fields: total energy (kWh), per finished request (J), per million prompt and
    output tokens served (kWh). Empty when the instance frame has no power columns."""
    if not set(POWER_COLUMNS) <= set(instances.columns):
        return {}
    secs = state_seconds(timeline, instances.instance, span_s)
    power = instances.set_index("instance")[POWER_COLUMNS]
    joules = float((secs.idle_s * power.power_idle_w + secs.prefill_s * power.power_prefill_w
                    + secs.decode_s * power.power_decode_w).sum())
    kwh = joules / 3.6e6
    return {"energy_kwh": kwh,
            "energy_per_request_j": joules / finished if finished else math.nan,
            "energy_per_m_tokens_kwh": kwh / tokens * 1e6 if tokens else math.nan}
