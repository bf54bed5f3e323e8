"""A callback at a later simulated time, with the least work SimPy's event loop allows.

The replicas' iterations and decode runs end on SimPy's clock. A :class:`simpy.Timeout` per
iteration is half of what one costs on the hot path, so the simulation's environment is a
:class:`Clock`: a SimPy environment whose queue also takes *ticks*, a plain ``(callback,
value)`` tuple in the place of the event, with the time, priority and sequence number a
timeout would get (the same order of events at equal times). Its ``step`` (so ``run``) and
:func:`drain` call ``callback(value)`` for a tick; every other event is SimPy's. On any
other environment :func:`after` falls back to a :class:`~simpy.Timeout` whose callback calls
``callback(value)``: the same calls in the same order. A tuple, not an object with SimPy's
event attributes (the tick before, whose ``callbacks`` and ``_ok`` let SimPy's own ``step``
process it): the tuple comes from CPython's free list, the object from a type call and
the cyclic collector's bookkeeping, about 650 instructions an event more
(``bench_instructions`` worker, thousand instructions a request, one tree: azure-x1 160.73
-> 157.77). The replicas and the arrivals push their ticks themselves, as :func:`after`
does, without its call (``Instance._queue``).

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


def _nothing(_value):
    """A tick with nothing left to call: what a tick is rescheduled with after its callback
    stopped the simulation (SimPy reschedules an event with the callbacks after that one)."""


def _direct() -> bool:
    env = simpy.Environment()
    return (isinstance(getattr(env, "_queue", None), list) and hasattr(env, "_eid")
            and hasattr(env, "_now"))


#: Whether SimPy's queue, sequence numbers and clock are reachable (:class:`Clock` needs
#: them; :func:`environment` makes a plain SimPy environment where they are not).
DIRECT = _direct()


class Clock(simpy.Environment):
    """A SimPy environment that also processes ticks (the module docstring): ``step``, so
    ``run``, calls a tick's ``callback(value)``; other events go to SimPy's ``step``."""

    def step(self) -> None:
        queue = self._queue
        if queue and type(queue[0][3]) is tuple:
            self._now, _, _, (callback, value) = heappop(queue)
            try:
                callback(value)
            except StopSimulation:
                _respent(self)
                raise
            return
        super().step()


def environment(initial_time: float = 0.0):
    """The simulation's environment: a :class:`Clock` (a plain SimPy one where SimPy's
    internals are not reachable: every event then a SimPy event)."""
    return (Clock if DIRECT else simpy.Environment)(initial_time=initial_time)


def tick_queue(env):
    """The queue ``env`` takes ticks in (a :class:`Clock`'s), else None: where a caller
    pushes its ticks itself, as :func:`after` does, without that call on its hot path."""
    return env._queue if type(env) is Clock else None


def _respent(env):
    # (as Environment.step reschedules an event whose callback stopped the simulation, with
    # the callbacks after that one: for a tick, none)
    heappush(env._queue, (env._now, -1, next(env._eid), (_nothing, None)))


def after(env, delay: float, callback, value=None):
    """Call ``callback(value)`` when ``delay`` more seconds have passed, ordered among the
    other events as a timeout scheduled now would be: a tick on a :class:`Clock`, a
    :class:`~simpy.Timeout` on another environment."""
    if type(env) is Clock:
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), (callback, value)))
    else:
        _timeout(env, delay, callback, value)


def _timeout(env, delay, callback, value):
    # (apart from after: a lambda there would make ``callback`` a cell at each of its calls)
    Timeout(env, delay, value).callbacks.append(lambda ev: callback(ev._value))


def at(env, when: float, callback, value=None):
    """As :func:`after`, at the time ``when`` (not before now) itself: ``now + (when - now)``
    may differ from ``when`` in the last bit, and an event that another schedule would have
    put at ``when`` must happen at exactly that float (on a :class:`Clock`; elsewhere at
    ``now + (when - now)``)."""
    if type(env) is Clock:
        heappush(env._queue, (when, NORMAL, next(env._eid), (callback, value)))
    else:
        _timeout(env, when - env.now, callback, value)


def succeed_last(env, event, value=None):
    """``event.succeed(value)`` as the *last* thing an event's callback does: where nothing
    else is due at this time, the event would be the next one processed, so its callbacks
    run now instead (one event fewer, the same order); otherwise it is scheduled as
    ``succeed`` would. Anything the caller did after this call would run after those
    callbacks, not before: call it last."""
    queue = tick_queue(env)
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
    processed, with ``Environment.step`` inlined (on a :class:`Clock`; otherwise ``env.step()``
    itself). The same events in the same order; a failed event that nothing
    defused raises as SimPy raises it, and a callback raising
    :class:`~simpy.core.StopSimulation` ends the run with its value (None otherwise)."""
    if type(env) is not Clock:
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
    queue = env._queue
    try:
        if limit is None:
            while queue:
                env._now, _, _, event = heappop(queue)
                if type(event) is tuple:       # a tick: (callback, value)
                    fn, value = event
                    fn(value)
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
                if type(event) is tuple:       # a tick: (callback, value)
                    fn, value = event
                    fn(value)
                    continue
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    _crash(event)
    except StopSimulation as stop:
        if type(event) is tuple:
            _respent(env)
        else:
            # (as Environment.step: the callbacks after the one that stopped run when it
            # resumes)
            event.callbacks = callbacks[callbacks.index(callback) + 1:]
            env.schedule(event, -1)
        return stop.args[0]
    return None


def _crash(event):
    """Raise a failed event's exception as ``Environment.step`` does: a copy, caused by it."""
    exc = type(event._value)(*event._value.args)
    exc.__cause__ = event._value
    raise exc
