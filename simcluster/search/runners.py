"""Runners: where the points of a search run — this process, a local process pool, or Ray.

A runner maps a module-level function over items and yields ``(index, result)`` as results
arrive (completion order); the caller puts them back in item order. Every point is an
independent, seeded simulation, so the results do not depend on the runner, the number of
workers or the order of completion.

* :class:`SerialRunner` — in this process (``jobs=1``; easiest to debug).
* :class:`LocalRunner` — a pool of ``jobs`` worker processes, started on first use and kept
  until :meth:`~LocalRunner.close`. On Linux they are forked by default, so they start at once,
  with what this process has loaded (the fitted calibration, and the policies a notebook cell
  or a plugin registered); elsewhere, or with ``start_method="spawn"`` (the design search,
  whose process has torch loaded: forking it can hang), they are spawned, which re-imports the
  main script (guard a script's sweep with ``if __name__ == "__main__":``). Each worker limits
  BLAS/OpenMP to one thread (threadpoolctl): ``jobs`` workers use ``jobs`` cores.
* :class:`RayRunner` — Ray tasks (``pip install "simcluster[ray]"``): ``address="local"``
  starts a Ray instance inside this process with the machine's cores and stops it at the end;
  any other address (``"auto"``, ``"ray://host:10001"``) connects to a running cluster, whose
  workers must have simcluster (and any plugin modules) installed. One CPU per task.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterator, Sequence

from simcluster.errors import InputError


def _limit_threads():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:        # pragma: no cover - threadpoolctl is a core dependency
        return
    threadpool_limits(1)


class SerialRunner:
    """Every item in this process, in order."""

    name = "serial"
    workers = 1
    forks = False

    def imap(self, fn: Callable, items: Sequence) -> Iterator[tuple[int, object]]:
        for i, item in enumerate(items):
            yield i, fn(item)

    def close(self):
        pass


class LocalRunner:
    """A pool of ``jobs`` worker processes (default: the machine's cores); ``start_method``
    "fork" or "spawn" (default: fork on Linux, else spawn)."""

    name = "local"

    def __init__(self, jobs: int | None = None, start_method: str | None = None,
                 field: str = "jobs"):
        import sys
        if start_method not in (None, "fork", "spawn", "forkserver"):
            raise InputError(f"unknown start method {start_method!r}; known: fork, spawn, "
                             "forkserver", field="start_method")
        self.forks = (start_method == "fork" if start_method else
                      sys.platform.startswith("linux"))     # workers inherit what is loaded
        self.start_method = start_method or ("fork" if self.forks else "spawn")
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                                 or jobs < 1):
            raise InputError(f"expected a whole number >= 1, got {jobs!r}", field=field)
        self.workers = jobs or os.cpu_count() or 1
        self._pool = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def imap(self, fn: Callable, items: Sequence) -> Iterator[tuple[int, object]]:
        if not items:
            return
        if self._pool is None:
            import multiprocessing
            self._pool = ProcessPoolExecutor(
                max_workers=min(self.workers, len(items)),
                mp_context=multiprocessing.get_context(self.start_method),
                initializer=_limit_threads)
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield futures[fut], fut.result()
        finally:                    # a caller that stops early leaves nothing queued
            for fut in pending:
                fut.cancel()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayRunner:
    """Ray tasks on a local Ray (``address="local"``) or a running cluster."""

    name = "ray"
    forks = False

    def __init__(self, address: str = "local", num_cpus: int | None = None,
                 field: str = "--ray"):
        try:
            import ray
        except ImportError:
            raise InputError('Ray is not installed: pip install "simcluster[ray]"',
                             field=field) from None
        self.ray, self.address = ray, address
        self._started = not ray.is_initialized()
        if self._started:
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                      configure_logging=False)
            if address == "local":
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
            else:
                try:
                    ray.init(address=address, **kw)
                except Exception as err:   # no cluster there, refused, wrong version
                    raise InputError(f"cannot connect to Ray at {address!r}: {err}",
                                     field=field) from None
        self.workers = int(ray.cluster_resources().get("CPU", 1))

    def imap(self, fn: Callable, items: Sequence) -> Iterator[tuple[int, object]]:
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        fn_ref = ray.put(fn)                 # shipped once, not once per item
        refs = {remote.remote(fn_ref, item): i for i, item in enumerate(items)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield refs[ref], ray.get(ref)

    def close(self):
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


def _ray_call(fn, item):
    _limit_threads()
    return fn(item)


def make_runner(jobs: int | None = None, ray: str | None = None):
    """The runner the command line's ``--jobs N`` / ``--ray ADDRESS`` name: Ray when
    ``ray`` is given, else this process for ``jobs=1``, else a local pool."""
    if ray:
        return RayRunner(ray)
    if jobs == 1:
        return SerialRunner()
    return LocalRunner(jobs)
