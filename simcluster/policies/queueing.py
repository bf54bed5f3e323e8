"""Queueing formulas: M/M/c (Erlang C), for sizing pools and for the simulator's anchors.

An M/M/c queue: Poisson arrivals at rate ``lam``, exponential service at rate ``mu`` per server,
``c`` identical servers behind one FCFS queue. With offered load ``a = lam / mu`` and
utilisation ``rho = a / c < 1``:

    P_W  = (a^c / c!) / (1 - rho) / [sum_{k<c} a^k / k! + (a^c / c!) / (1 - rho)]   (Erlang C)
    E[W] = P_W / (c mu - lam)          (= P_W * 1/(1 - rho) * 1/(c mu), hLLM's eq. 2)

P_W is computed through the Erlang-B recursion ``B(k) = a B(k-1) / (k + a B(k-1))``, which is
stable for large c and a (no factorials). Everything here is a pure function of numbers.
"""

from __future__ import annotations

import math


def _check(lam: float, mu: float, c: int):
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"arrival rate must be finite and >= 0, got {lam!r}")
    if mu <= 0 or not math.isfinite(mu):
        raise ValueError(f"service rate must be finite and > 0, got {mu!r}")
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"server count must be a whole number >= 1, got {c!r}")


def erlang_b(a: float, c: int) -> float:
    """Blocking probability of M/M/c/c with offered load ``a`` (Erlang B)."""
    b = 1.0
    for k in range(1, int(c) + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(lam: float, mu: float, c: int) -> float:
    """P_W: probability that an arrival waits, in M/M/c. 1.0 when the queue is unstable."""
    _check(lam, mu, c)
    a = lam / mu
    if a >= c:
        return 1.0
    if a == 0:
        return 0.0
    b = erlang_b(a, c)
    rho = a / c
    return b / (1.0 - rho * (1.0 - b))


def mean_wait(lam: float, mu: float, c: int) -> float:
    """E[W]: mean time in queue (before service) in M/M/c; ``inf`` when lam >= c mu."""
    _check(lam, mu, c)
    if lam >= c * mu:
        return math.inf
    return erlang_c(lam, mu, c) / (c * mu - lam)


def mean_queue_length(lam: float, mu: float, c: int) -> float:
    """L_q = lam E[W] (Little's law)."""
    w = mean_wait(lam, mu, c)
    return math.inf if math.isinf(w) else lam * w


def min_servers(lam: float, mu: float, max_wait_s: float, c_max: int | None = None,
                c_min: int = 1) -> int:
    """The smallest c >= c_min with c > lam/mu and E[W] <= ``max_wait_s``.

    Returns ``c_max`` when no c up to ``c_max`` meets the threshold (the pool is too small for
    the load: every server is needed). With ``lam == 0`` the answer is ``c_min``.
    """
    if max_wait_s < 0:
        raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
    _check(lam, mu, max(c_min, 1))
    c = max(c_min, math.floor(lam / mu) + 1) if lam > 0 else c_min
    while c_max is None or c < c_max:
        if mean_wait(lam, mu, c) <= max_wait_s:
            return c
        c += 1
    return c_max
