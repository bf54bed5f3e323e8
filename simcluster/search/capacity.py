"""Capacity: the highest request rate a configuration serves within its SLOs.

The trace is rate-scaled (``trace.rate_per_s``: every gap between arrivals stretched or
compressed by one factor, the arrival pattern kept) and the configuration *meets* a rate when
its SLO attainment (the share of all requests, rejected ones included, within every SLO) is at
least ``attainment``. The search

1. brackets: from the trace's own rate (or ``start_per_s``), doubles until a rate fails, or
   halves until one meets (at most ``max_doublings`` steps; ``k`` steps per round);
2. narrows the bracket ``[meets, fails]`` until it is at most ``tolerance`` wide
   (``rel_tol`` x the rate that meets, or ``abs_tol`` req/s): each round evaluates ``k``
   rates evenly inside it in parallel (``k`` = the runner's workers; k = 1 is bisection) and
   keeps the sub-interval between the highest rate that meets below the lowest that fails.

The answer is the highest rate found to meet, within one final step of the true crossing when
attainment falls with rate. Attainment on a finite trace is not strictly monotone (a rescaled
burst can fail at one rate and pass at a slightly higher one); the points evaluated are
returned so a non-monotone stretch shows.

A finite trace compressed far enough arrives as one burst, which replicas can absorb within
the SLOs at a rate they could never sustain (80 requests at 472 req/s arrive in 0.17 s and fit
in a few batches). So the answer is flagged ``burst`` when, at it, the last request finished
later after the last arrival than the arrivals took (``drain_s > arrival_window_s``): the run
measured a backlog worked off after the load stopped, not a steady state. A stable cluster
drains in about one request's latency, short of a window many latencies long; an overloaded
one drains in about window x (rate / capacity - 1), so the rule also catches twice the
sustainable rate on a long trace. A trace of more requests measures a sustained rate.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import pandas as pd

from simcluster.errors import InputError

from simcluster.search.sweep import Outcome, points_bar, run_points

RATE_KEY = "trace.rate_per_s"


def meets(outcome: Outcome, attainment: float) -> bool:
    """Whether a point met its SLOs at ``attainment`` (a failed point does not)."""
    a = outcome.row.get("slo_attainment", math.nan) if outcome.ok else math.nan
    return bool(a >= attainment)


@dataclass
class CapacityResult:
    """The highest rate that meets (0 when none did), the bracket ``[rate, fails_at]`` the
    search ended with, the tolerance it stopped at, and every point it evaluated; ``burst``
    when the run at the answer measured a burst absorbed, not a rate sustained
    (:func:`is_burst`)."""

    rate_per_s: float
    fails_at_per_s: float
    tolerance_per_s: float
    attainment: float
    points: pd.DataFrame
    note: str = ""
    burst: bool = False

    def __repr__(self) -> str:
        return f"<CapacityResult: {self}; .points>"

    def __str__(self) -> str:
        if self.rate_per_s <= 0:
            return f"no rate meets the SLOs at {self.attainment:.0%} attainment: {self.note}"
        return (f"capacity {self.rate_per_s:.4g} req/s (meets {self.attainment:.0%} attainment; "
                f"{self.fails_at_per_s:.4g} req/s does not; tolerance "
                f"{self.tolerance_per_s:.3g} req/s; {len(self.points)} points){self.note}")


class _Search:
    def __init__(self, point, runner, attainment, out, progress, fresh):
        self.point, self.runner, self.attainment = point, runner, attainment
        self.kw = dict(out=out, progress=progress, fresh=fresh, desc="capacity")
        self.seen: dict[float, Outcome] = {}

    def evaluate(self, rates) -> list[bool]:
        todo = [r for r in rates if r not in self.seen]
        pts = [self.point.with_overrides({RATE_KEY: r}) for r in todo]
        for r, o in zip(todo, run_points(pts, self.runner, **self.kw)):
            self.seen[r] = o
        return [meets(self.seen[r], self.attainment) for r in rates]

    def frame(self) -> pd.DataFrame:
        rows = []
        for r in sorted(self.seen):
            o = self.seen[r]
            rows.append({"rate_per_s": r, "meets": meets(o, self.attainment),
                         "slo_attainment": o.row.get("slo_attainment", math.nan),
                         "error": o.error or o.row.get("failure", ""), **{
                             k: o.row.get(k, math.nan) for k in (
                                 "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s",
                                 "tpot_p90_s", "tpot_p99_s", "request_throughput_per_s",
                                 "goodput_per_s", "cost_per_m_tokens_usd", "arrival_window_s",
                                 "drain_s")}})
        return pd.DataFrame(rows)


def _interior(lo: float, hi: float, k: int) -> list[float]:
    return [lo + (hi - lo) * i / (k + 1) for i in range(1, k + 1)]


def capacity(point, runner=None, *, attainment: float = 0.9, rel_tol: float = 0.02,
             abs_tol: float | None = None, start_per_s: float | None = None,
             max_doublings: int = 12, out=None, progress: bool = True,
             fresh: bool = False) -> CapacityResult:
    """The highest rate ``point`` serves within its SLOs at ``attainment`` (see the module
    docstring). The point must carry SLOs (``slo.ttft_s`` / ``slo.tpot_s``)."""
    if not 0 < attainment <= 1:
        raise InputError(f"expected a share in (0, 1], got {attainment}", field="attainment")
    for name, tol in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
        # (0 bisected until the floats met, NaN stopped at once: neither is a tolerance)
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
                                or not 0 < tol < math.inf):
            raise InputError(f"expected a finite number > 0, got {tol!r}", field=name)
    if point.get("slo.ttft_s") is None and point.get("slo.tpot_s") is None:
        raise InputError("capacity needs an SLO: set slo.ttft_s and/or slo.tpot_s (--ttft-slo, "
                         "--tpot-slo)", field="slo")
    from simcluster.search.runners import SerialRunner
    runner = runner or SerialRunner()
    bar = points_bar(0, "capacity", runner) if progress is True else (
        None if progress is False or progress is None else progress)
    try:
        return _search(point, runner, attainment, rel_tol, abs_tol, start_per_s,
                       max_doublings, _Search(point, runner, attainment, out, bar, fresh))
    finally:
        if progress is True:
            bar.close()


def _search(point, runner, attainment, rel_tol, abs_tol, start_per_s, max_doublings,
            s: "_Search") -> CapacityResult:
    r0 = start_per_s or _native_rate(point, s)
    if not r0 or not math.isfinite(r0) or r0 <= 0:
        raise InputError("the trace has no rate to rescale: capacity sets trace.rate_per_s by "
                         "scaling the gaps between arrivals, and its requests arrive at one "
                         "instant (or it has one); give a trace whose arrivals spread over time",
                         field="trace")
    k = max(1, min(getattr(runner, "workers", 1), 8))
    lo, hi = _bracket(s, r0, max_doublings, k)
    if lo == 0.0:
        return CapacityResult(0.0, hi, math.nan, attainment, s.frame(),
                              note=f"even {hi:.4g} req/s fails" + _at_any_rate(s.seen[hi]))
    if math.isinf(hi):
        return CapacityResult(lo, hi, math.nan, attainment, s.frame(),
                              note=f"; every rate up to {lo:.4g} req/s meets (no upper bound)"
                              + burst_note(s.seen[lo], lo), burst=is_burst(s.seen[lo]))
    tol = (lambda lo_: abs_tol) if abs_tol else (lambda lo_: rel_tol * lo_)
    while hi - lo > tol(lo):
        rates = _interior(lo, hi, k)
        ok = s.evaluate(rates)
        first_fail = next((i for i, m in enumerate(ok) if not m), len(ok))
        lo = rates[first_fail - 1] if first_fail > 0 else lo
        hi = rates[first_fail] if first_fail < len(ok) else hi
    return CapacityResult(lo, hi, hi - lo, attainment, s.frame(),
                          note=burst_note(s.seen[lo], lo), burst=is_burst(s.seen[lo]))


def is_burst(o: Outcome) -> bool:
    """Whether a run drained for longer after its last arrival than its arrivals took (see
    the module docstring): it measured a burst absorbed, not a rate sustained."""
    w, d = o.row.get("arrival_window_s", math.nan), o.row.get("drain_s", math.nan)
    return bool(o.ok and d > w)


def burst_note(o: Outcome, rate: float) -> str:
    """The warning for a capacity that is a burst (:func:`is_burst`), or ''."""
    if not is_burst(o):
        return ""
    r = o.row
    return (f"; a burst, not a sustained rate: at {rate:.4g} req/s the trace's "
            f"{r.get('requests', '?')} requests arrive within {r['arrival_window_s']:.3g} s and "
            f"the last finishes {r['drain_s']:.3g} s after the last arrival, so the replicas "
            "work off the whole trace after the load stops; a trace of more requests "
            "(trace.first_n, trace.synthetic.n) measures the rate they sustain")


def rejection_note(o: Outcome) -> str:
    """Why a configuration may fail at any rate: the requests its run rejected (whatever
    the rate, a request that cannot fit is rejected, and attainment counts it as a miss);
    '' when it rejected none."""
    rejected, n = o.row.get("rejected", 0), o.row.get("requests", 0)
    why = o.row.get("rejected_because", "")
    if not (o.ok and rejected and n and why):
        return ""
    return (f"rejected {rejected} of {n} requests, so attainment is at most "
            f"{(n - rejected) / n:.3g}: {why}")


def _at_any_rate(o: Outcome) -> str:
    note = rejection_note(o)
    return f"; that run {note}" if note else ""


def _native_rate(point, s: _Search) -> float:
    """The trace's own offered rate (one run at it; that run is a point of the search)."""
    pt = point.with_overrides({})
    o = run_points([pt], s.runner, **s.kw)[0]
    if not o.ok:
        raise InputError(f"the configuration fails at the trace's own rate: {o.error}")
    r = float(o.row.get("offered_rate_per_s", math.nan))
    if point.get(RATE_KEY) is None:
        s.seen.setdefault(r, o)     # the trace at its own rate is the point at rate r
    return r


def _bracket(s: _Search, r0: float, max_doublings: int, k: int = 1) -> tuple[float, float]:
    """``(lo, hi)``: lo meets (0.0: nothing did), hi fails (inf: nothing did). Rates step
    by factors of two away from ``r0``, ``k`` of them per round (in parallel)."""
    up = s.evaluate([r0])[0]
    last, steps = r0, 0
    while steps < max_doublings:
        n = min(k, max_doublings - steps)
        rates = [last * 2.0 ** (i if up else -i) for i in range(1, n + 1)]
        ok = s.evaluate(rates)
        for r, m in zip(rates, ok):
            if m != up:                   # crossed
                return (last, r) if up else (r, last)
            last = r
        steps += n
    return (last, math.inf) if up else (0.0, last)
