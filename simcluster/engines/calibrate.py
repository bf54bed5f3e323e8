"""``simcluster calibrate-engine``: a per-iteration log -> ``hwspecs/engines/<name>.toml``."""

from __future__ import annotations

from pathlib import Path

from simcluster.calibration import load_calibration
from simcluster.cost import CostModel, Layout
from simcluster.engines import EngineSpec, engine_toml
from simcluster.engines.fit import FitResult, fit_logs
from simcluster.engines.model import BASE_TERMS, KINDS, TERMS
from simcluster.engines.profile import read_iterations
from simcluster.hardware import load_device
from simcluster.models import load_model

#: What each term stood for in the reference engine (comments written into the TOML).
TERM_NOTES = {
    "iteration": "host: scheduling, input building, eager launches, sync, update",
    "sequence": "per request in the batch",
    "token": "per new token",
    "kv_token": "per KV token attended: gather into a packed tensor, copy, read",
    "attn_pair": "per (new token, KV token) pair: attention over the packed batch, dense mask",
    "sample": "per sampled token",
}


def hf_settings(meta: dict) -> tuple[str, dict, dict] | None:
    """Batching policy, its parameters and scheduler settings from the ``settings`` line of
    a log written by ``simcluster.harness.engine_profile`` (transformers CB)."""
    if meta.get("engine") != "hf-transformers-cb" or "settings" not in meta:
        return None
    s = dict(kv.strip().split("=", 1) for kv in meta["settings"].split(",") if "=" in kv)
    params = {"safety_margin": float(s.get("safety_margin", 0.15)),
              "num_blocks": int(s["num_blocks"]),
              "max_requests_per_batch": int(s["max_requests_per_batch"])}
    sched = {"block_size": int(s["block_size"]),
             "max_batched_tokens": int(s["max_batch_tokens"]),
             "max_num_seqs": int(s["max_requests_per_batch"]), "chunked_prefill": True}
    return "hf_cb", params, sched


def calibrate(csvs, device: str, model: str, name: str, *, calibration: str = "measured",
              batching: str | None = None, batching_params: dict | None = None,
              scheduler: dict | None = None, description: str = "",
              scale_free: bool = False, decode_only=()) -> tuple[EngineSpec, FitResult]:
    """Fit the engine model of the per-iteration log(s) ``csvs`` (one path or several, fitted
    together) on ``device`` serving ``model``. Metadata and engine settings come from the
    first log. The logs in ``decode_only`` (paths) contribute their decode iterations only."""
    paths = [csvs] if isinstance(csvs, (str, Path)) else list(csvs)
    only = [Path(p) for p in ([decode_only] if isinstance(decode_only, (str, Path))
                              else decode_only)]
    paths += [p for p in only if Path(p) not in [Path(q) for q in paths]]
    logs = [read_iterations(p) for p in paths]
    dev, mdl = load_device(device), load_model(model)
    timer = CostModel(load_calibration(calibration)).timer(mdl, Layout.uniform(dev))
    res, _ = fit_logs(logs, timer, scale_free=scale_free,
                      decode_only=[i for i, p in enumerate(paths) if Path(p) in only])
    first = logs[0].meta
    found = hf_settings(first)
    pol, params, sched = found if found else ("vllm", {}, {})
    meta = {("served_model" if k == "model" else k): v for k, v in first.items()
            if k not in ("settings", "kind", "device", "calibration", "sweep", "t0_unix")}
    meta["profiles"] = [Path(p).name for p in paths if Path(p) not in only]
    if only:
        meta["profiles_decode_only"] = [Path(p).name for p in only]
    if found:
        meta["settings"] = first["settings"]
    fit = {"iterations": res.n_fit, "prefill_iterations_not_used": res.n_skipped,
           "dropped_after_idle": res.n_transient,
           "dropped_fast_host_state": res.n_dropped - res.n_transient,
           "loss": "least squares on relative error (after a soft_l1 screen)",
           "shared_kinds": res.shared,
           "terms_kept": list(res.kept),
           "terms_dropped": [t for t in TERMS if t not in res.kept],
           "rel_err_median": round(res.rel_err_median, 4),
           "rel_err_p90": round(res.rel_err_p90, 4), "bias": round(res.bias, 4),
           "device_share": round(res.device_share, 4),
           "cost_increase_if_removed": {t: round(v, 4) for t, v in res.support.items()},
           "share_of_time": {t: round(v, 4) for t, v in res.share.items()}}
    spec = EngineSpec(name=name, terms=res.terms, device=dev.name, model=model,
                      calibration=calibration, description=description,
                      batching=batching or pol,
                      batching_params=dict(batching_params if batching_params is not None
                                           else params),
                      scheduler=dict(scheduler if scheduler is not None else sched),
                      meta=meta, fit=fit)
    return spec, res


def write_spec(spec: EngineSpec, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"Engine model {spec.name}: written by `simcluster calibrate-engine`.",
              "iteration time = device_scale * (kernel-calibrated device time) + sum of",
              "coefficient x count over [terms]; see simcluster/engines/model.py and",
              "hwspecs/engines/README.md."]
    path.write_text(engine_toml(spec, {"header": header, "terms": TERM_NOTES}))
    return path


def format_fit(res: FitResult) -> str:
    lines = [f"fitted on {res.n_fit} iterations ({res.n_skipped} prefill iterations of "
             f"decode-only logs not used; {res.n_dropped} dropped: {res.n_transient} "
             f"right after idling, {res.n_dropped - res.n_transient} in the fast host state); "
             f"relative error median {100 * res.rel_err_median:.1f}%, "
             f"p90 {100 * res.rel_err_p90:.1f}%, bias {100 * res.bias:+.1f}%; "
             f"device time is {100 * res.device_share:.0f}% of the predicted time"
             + ("; one coefficient per term for both kinds (too few of one kind)"
                if res.shared else ""),
             f"{'term':<18} {'coefficient':>12}  {'share':>6}  {'cost if removed':>15}"]
    t = res.terms
    for kind in KINDS:
        for base in BASE_TERMS:
            name = f"{kind}_{base}"
            v = getattr(t, name)
            if name in res.kept:
                lines.append(f"{name:<18} {v:>12.4g}  {100 * res.share[name]:>5.1f}%  "
                             f"{100 * res.support[name]:>+14.1f}%")
            else:
                lines.append(f"{name:<18} {'dropped':>12}  (the data does not support it)")
    lines.append(f"{'device time':<18} {'x' + format(t.device_scale, '.3g'):>12}")
    return "\n".join(lines)
