"""The ``[trace]`` section of an experiment: a trace file or bundled trace, or a synthetic
workload (``[trace.synthetic]``, ``[trace.shared_prefix]``, ``[trace.conversations]``), then
the transforms (``window_s``, ``first_n``, ``subsample``, ``rate_per_s``, ``fit_context``).

Every value is checked where it is read; file paths are relative to the experiment's folder
(an override's to where it was given).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from simcluster import workload as wl
from simcluster.errors import InputError
from simcluster.experiment.tables import Table, non_negative, positive

# A sanity limit of one process, not of the simulator: beyond it a run would exhaust memory
# before it starts. Larger synthetic traces can be generated with
# simcluster.workload.synthetic_trace, saved, and named as a trace source.
MAX_SYNTHETIC_REQUESTS = 10_000_000


def _count(t: Table, key: str, default=...):
    return t.get(key, int, default, check=lambda v: 1 <= v <= MAX_SYNTHETIC_REQUESTS,
                 expect=f"a whole number in [1, {MAX_SYNTHETIC_REQUESTS:,}]")


def bundled_or_path(t: Table, key: str):
    """A bundled trace name, else a file path relative to the experiment's folder (or to
    the folder of the override that set it: :meth:`~.tables.Table.base_for`)."""
    source = t.get(key, str)
    if source in wl.bundled_traces():
        return source
    path = t.base_for(key) / source
    return path if path.exists() or "/" in source or "." in source else source


def lengths(t: Table):
    """A length source: a fixed count, a lognormal, or a trace to resample."""
    dist = t.get("dist", str, check=lambda d: d in ("fixed", "lognormal", "resample"),
                 expect="'fixed', 'lognormal' or 'resample'")
    if dist == "fixed":
        spec = t.get("tokens", int, check=positive, expect=">= 1")
    elif dist == "lognormal":
        spec = partial(wl.lognormal_lengths, median=t.get("median", float, check=positive,
                                                          expect="> 0"),
                       sigma=t.get("sigma", float, check=non_negative, expect=">= 0"),
                       max_tokens=t.get("max_tokens", int, None, check=positive,
                                        expect=">= 1"))
        with t.at():                       # parameters that leave no room fail here
            spec(1, rng=np.random.default_rng(0))
    else:
        with t.at("source"):
            spec = wl.load_trace(bundled_or_path(t, "source"))
    t.done()
    return spec


def _synthetic(syn: Table, rng: np.random.Generator):
    n = _count(syn, "n")
    rate = syn.get("rate_per_s", float, check=positive, expect="> 0")
    cv = syn.get("cv", float, 1.0, check=positive, expect="> 0")
    prompt = lengths(syn.sub("prompt", required=True))
    output = None
    if isinstance(prompt, wl.Trace):
        if "output" in syn.data:
            raise syn._err("output", "not used: 'resample' draws prompt and output together")
    else:
        output = lengths(syn.sub("output", required=True))
    syn.done()
    with syn.at():
        return wl.synthetic_trace(n, arrivals=partial(wl.gamma_arrivals, rate_per_s=rate, cv=cv),
                                  prompt=prompt, output=output, rng=rng)


def _shared_prefix(sp: Table, rng: np.random.Generator):
    from simcluster.workload import prefixes
    n = _count(sp, "n")
    arrivals = partial(wl.gamma_arrivals,
                       rate_per_s=sp.get("rate_per_s", float, check=positive, expect="> 0"),
                       cv=sp.get("cv", float, 1.0, check=positive, expect="> 0"))
    kw = dict(system_tokens=sp.get("system_tokens", int, check=positive, expect=">= 1"),
              system_prompts=sp.get("system_prompts", int, 1, check=positive, expect=">= 1"),
              zipf_s=sp.get("zipf_s", float, 0.0, check=non_negative, expect=">= 0"),
              block_tokens=sp.get("block_tokens", int, 512, check=positive, expect=">= 1"))
    user = lengths(sp.sub("user", required=True))
    output = lengths(sp.sub("output", required=True))
    sp.done()
    with sp.at():
        return prefixes.shared_prefix_trace(n, arrivals=arrivals, user=user, output=output,
                                            rng=rng, **kw)


def _conversations(conv: Table, rng: np.random.Generator):
    from simcluster.workload import prefixes
    n = _count(conv, "n")
    kw = dict(rate_per_s=conv.get("rate_per_s", float, check=positive, expect="> 0"),
              think_s=conv.get("think_s", float, 30.0, check=non_negative, expect=">= 0"),
              system_tokens=conv.get("system_tokens", int, 0, check=non_negative,
                                     expect=">= 0"),
              block_tokens=conv.get("block_tokens", int, 512, check=positive, expect=">= 1"))
    turns = lengths(conv.sub("turns", required=True))
    user = lengths(conv.sub("user", required=True))
    output = lengths(conv.sub("output", required=True))
    conv.done()
    with conv.at():
        return prefixes.conversation_trace(n, turns=turns, user=user, output=output, rng=rng,
                                           **kw)


_GENERATED = {"synthetic": _synthetic, "shared_prefix": _shared_prefix,
              "conversations": _conversations}


def read_trace(t: Table, rng: np.random.Generator):
    given = [k for k in _GENERATED if k in t.data]
    if len(given) > 1:
        raise t._err(given[1], f"give one of [trace.{given[0]}] and [trace.{given[1]}]")
    if given:
        for key in ("source", "format", "sort"):
            if key in t.data:
                raise t._err(key, f"not with [trace.{given[0]}]: give either a trace 'source' "
                                  f"(with its format and sort) or [trace.{given[0]}]")
        trace = _GENERATED[given[0]](t.sub(given[0]), rng)
    else:
        source = bundled_or_path(t, "source")
        fmt, sort = t.get("format", str, None), t.get("sort", bool, False)
        with t.at("source"):
            trace = wl.load_trace(source, format=fmt, sort=sort)
    trace = _transforms(t, trace, rng)
    t.done()
    if len(trace) == 0:
        raise InputError("no requests left after window_s / first_n / subsample", file=t.file,
                         field="trace")
    return trace


def _transforms(t: Table, trace, rng):
    window = t.get("window_s", list, None)
    if window is not None:
        if len(window) != 2 or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                       for w in window):
            raise t._err("window_s", f"expected [start_s, end_s] (two numbers), got {window!r}")
        with t.at("window_s"):
            trace = wl.time_window(trace, float(window[0]), float(window[1]))
    first = t.get("first_n", int, None, check=positive, expect=">= 1")
    if first is not None:
        with t.at("first_n"):
            trace = wl.first_n(trace, first)
    sub = t.get("subsample", (int, float), None, check=positive,
                expect="a fraction in (0, 1] or a count >= 1")
    if sub is not None:
        with t.at("subsample"):
            trace = wl.subsample(trace, sub, rng)
    rate = t.get("rate_per_s", float, None, check=positive, expect="> 0")
    if rate is not None:
        with t.at("rate_per_s"):
            trace = wl.rescale_rate(trace, rate)
    fit = t.get("fit_context", int, None, check=lambda v: v >= 2, expect=">= 2")
    if fit is not None:
        with t.at("fit_context"):
            trace = wl.fit_context(trace, fit)
    return trace
