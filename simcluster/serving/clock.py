"""A callback at a later simulated time, with the least work SimPy's event loop allows.

The replicas' iterations and decode runs end on SimPy's clock. A :class:`simpy.Timeout` per
iteration is half of what one costs on the hot path; what ``Environment.step`` needs of an
event is only its ``callbacks``, ``_ok`` and ``_value``, so :func:`after` puts a minimal
object with those (a *tick*: one callback, which :func:`drain` calls directly) straight into
the environment's queue, with the priority and sequence number a timeout would get (the same
order of events at equal times). Where SimPy's environment does not have that queue
(another SimPy version), it falls back to a :class:`~simpy.Timeout`.

:func:`at` takes an absolute time; :func:`succeed_last` triggers an event as a callback's
last act and runs its callbacks at once where it would be processed next anyway;
:func:`drain` is ``env.run()`` with ``Environment.step`` written into its loop (a method call
less per event: 1.2-1.3% fewer instructions per simulated request, ``bench_instructions.py
--quick``: azure-x1 181.94 -> 179.84 thousand, inst-1 194.44 -> 191.95).
"""

from __future__ import annotations

from heapq import heappop, heappush

import simpy
from simpy.core import NORMAL, StopSimulation
from simpy.events import PENDING, Timeout


def _nothing(_event):
    """The callback of a tick whose callback already ran (see :class:`_Tick`)."""


class _Tick:
    """The part of a SimPy event that ``Environment.step`` processes: here one callback
    (``fn``), a value and ``_ok`` (always true). :func:`drain` calls ``fn`` itself: no list
    of callbacks to build, swap and loop over, no failure to check (``bench_instructions``
    worker, thousand instructions a request, one tree: azure-x1 171.90 -> 169.91, azure-x4
    199.59 -> 196.82, inst-64 260.31 -> 257.35), and leaves it in place (a tick is
    private to the module that scheduled it: nothing asks whether it was processed).
    SimPy's own ``step`` (``env.run()``) reads and clears ``callbacks``, made here from
    ``fn``: None once cleared, and the empty rest that ``step`` reschedules a tick with
    after its callback stopped the simulation (:func:`drain` does the same)."""

    __slots__ = ("fn", "_value")
    _ok = True

    @property
    def callbacks(self):
        return None if self.fn is None else [self.fn]

    @callbacks.setter
    def callbacks(self, value):
        if value:
            raise ValueError("a tick's one callback is given when it is scheduled")
        self.fn = None if value is None else _nothing


def _direct() -> bool:
    env = simpy.Environment()
    return (isinstance(getattr(env, "_queue", None), list) and hasattr(env, "_eid")
            and hasattr(env, "_now"))


DIRECT = _direct()


def after(env, delay: float, callback, value=None):
    """Call ``callback(event)`` when ``delay`` more seconds have passed (``event._value`` is
    ``value``), ordered among the other events as a timeout scheduled now would be."""
    if DIRECT:
        tick = _Tick()
        tick.fn, tick._value = callback, value
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), tick))
        return tick
    ev = Timeout(env, delay, value)
    ev.callbacks.append(callback)
    return ev


def at(env, when: float, callback, value=None):
    """As :func:`after`, at the time ``when`` (not before now) itself: ``now + (when - now)``
    may differ from ``when`` in the last bit, and an event that another schedule would have
    put at ``when`` must happen at exactly that float."""
    if DIRECT:
        tick = _Tick()
        tick.fn, tick._value = callback, value
        heappush(env._queue, (when, NORMAL, next(env._eid), tick))
        return tick
    return after(env, when - env.now, callback, value)


def succeed_last(env, event, value=None):
    """``event.succeed(value)`` as the *last* thing an event's callback does: where nothing
    else is due at this time, the event would be the next one processed, so its callbacks
    run now instead (one event fewer, the same order); otherwise it is scheduled as
    ``succeed`` would. Anything the caller did after this call would run after those
    callbacks, not before: call it last."""
    queue = env._queue if DIRECT else None
    if queue is not None and (not queue or queue[0][0] > env._now):
        if event.callbacks is None or event._value is not PENDING:
            raise RuntimeError(f"{event} has already been triggered")
        event._ok, event._value = True, value
        callbacks, event.callbacks = event.callbacks, None
        for callback in callbacks:
            callback(event)
        return
    event.succeed(value)


def drain(env, limit: int | None = None):
    """``env.run()``: process events until none is left, or until ``limit`` events have been
    processed, with ``Environment.step`` inlined (where SimPy's queue is reachable; otherwise
    ``env.step()`` itself). The same events in the same order; a failed event that nothing
    defused raises as SimPy raises it, and a callback raising
    :class:`~simpy.core.StopSimulation` ends the run with its value (None otherwise)."""
    if not DIRECT:
        if limit is None:
            return env.run()
        try:
            for _ in range(limit):
                if env.peek() == float("inf"):
                    break
                env.step()
        except StopSimulation as stop:     # (step has put the callbacks after it back)
            return stop.args[0]
        return None
    queue, tick = env._queue, _Tick
    try:
        if limit is None:
            while queue:
                env._now, _, _, event = heappop(queue)
                if type(event) is tick:
                    event.fn(event)
                    continue
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    _crash(event)
        else:
            # The same loop, counted, for a run reporting progress. Kept apart: counting in
            # the loop above cost 0.5% of a run that needs no count (azure-x1 179.84 ->
            # 180.82 thousand instructions a request), and env.step() here instead gave the
            # progress path back 5-12% of a run (azure-x1, CPU medians of 15: 0.422 / 0.472,
            # 0.464 / 0.505, 0.454 / 0.477 s without / with progress; this loop 0.475 / 0.465).
            for _ in range(limit):
                if not queue:
                    break
                env._now, _, _, event = heappop(queue)
                if type(event) is tick:
                    event.fn(event)
                    continue
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    _crash(event)
    except StopSimulation as stop:
        if type(event) is tick:        # (its one callback: rescheduled with none left)
            callbacks, callback = [event.fn], event.fn
        # (as Environment.step: the callbacks after the one that stopped run when it resumes)
        event.callbacks = callbacks[callbacks.index(callback) + 1:]
        env.schedule(event, -1)
        return stop.args[0]
    return None


def _crash(event):
    """Raise a failed event's exception as ``Environment.step`` does: a copy, caused by it."""
    exc = type(event._value)(*event._value.args)
    exc.__cause__ = event._value
    raise exc
