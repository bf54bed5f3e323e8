"""The fast event loop gives exactly the results of the plain one (issue 12).

Decode step tables, the iteration memo, shared timers, the routing index, column chunks and
streaming are all caches or storage: each test runs a scenario both ways and compares frames
bit for bit.
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simcluster.serving.instance as instance_mod
import simcluster.simulation.simulation as simulation_mod
from simcluster.calibration import load_calibration
from simcluster.cost import CostModel, Layout
from simcluster.cost.model import IterationTimer
from simcluster.hardware import load_device
from simcluster.models import list_models, model_preset
from simcluster.policies import BATCHERS
from simcluster.simulation import Simulation
from simcluster.serving.rowlog import RowLog

from conftest import make_trace, one_instance, ship_with_a_resource


def _poisson(n, rate, seed=0, out_scale=1):
    rng = np.random.default_rng(seed)
    return make_trace(np.cumsum(rng.exponential(1 / rate, n)), rng.integers(20, 3000, n),
                      rng.integers(1, 400, n) * out_scale)


def _frames_equal(a, b):
    assert a.requests.equals(b.requests)
    assert a.timeline.equals(b.timeline)


@pytest.mark.parametrize("name", list_models())
def test_decode_step_tables_equal_evaluating_each_step(name):
    """A run's steps read from the per-batch-size table are the floats of evaluating them
    (every operation is elementwise), for every model preset, at block edges too: a run
    that ends in the overlap past its first block's end (one slice), one that goes beyond it
    (two), one over several blocks."""
    from simcluster.cost.decode_steps import STEP_BLOCK as B, STEP_OVERLAP as OV
    cal = load_calibration("measured")
    model = model_preset(name)
    for dev in ("H100-SXM", "Xeon-Gold-6148"):
        t = IterationTimer(cal, model, Layout.uniform(load_device(dev)))
        for n, s0, k in ((1, 1, 3000), (7, 1017, 9), (64, 64 * 900, 200), (200, 1024, 1),
                         (3, 1022, 2), (33, 33 * 255 + 5, 2), (29, 29 * 250 + 11, 700),
                         (5, B - 3, 10), (1, B - 1, OV + 1), (7, B - 100, 700),
                         (1, B + OV - 1, 2), (3, 5, (3 * B + OV) // 3)):
            got = t.decode_steps(n, s0, k)
            sums = s0 + n * np.arange(k, dtype=float)
            want = t._attn_decode_scalar(n, sums) + (t._dense(n, n)[0, 0] + t._links(n, n))
            assert np.array_equal(got, want)
        assert not any(b.flags.writeable for b in t._step_table.values())   # views of it too


def test_decode_step_table_drops_the_least_recently_read_block(h100, llama7b, monkeypatch):
    """A full step table drops the block read longest ago, not the whole table (a working
    set larger than the table rebuilt every block at each clear); a rebuilt block holds the
    same floats."""
    import simcluster.cost.decode_steps as ds
    monkeypatch.setattr(ds, "STEP_BLOCKS_KEPT", 3)
    t = IterationTimer(load_calibration("measured"), llama7b, Layout.uniform(h100))
    B = ds.STEP_BLOCK
    first = t.decode_steps(4, 100, 5).copy()
    for c in (1, 2):
        t.decode_steps(4, c * B + 8, 5)
    t.decode_steps(4, 100, 5)                  # block 0 read again: now the most recent
    t.decode_steps(4, 3 * B + 8, 5)            # a fourth block: block 1 goes
    assert list(t._step_table) == [(4, 2), (4, 0), (4, 3)]
    t.decode_steps(4, B + 8, 5)                # block 1 rebuilt, block 2 goes
    assert list(t._step_table) == [(4, 0), (4, 3), (4, 1)]
    assert np.array_equal(t.decode_steps(4, 100, 5), first)
    k = (ds.STEP_OVERLAP + 200) // 4           # (past block 9's overlap: two slices)
    assert np.array_equal(t.decode_steps(4, 10 * B - 40, k),
                          t._decode_fns[4](10 * B - 40 + 4 * np.arange(k, dtype=float)))
    assert list(t._step_table)[-2:] == [(4, 9), (4, 10)] and len(t._step_table) == 3
    # the block each batch size read last, kept beside the table, is one of the table's
    # (a block dropped from the table is dropped there too: none kept alive)
    for n in (5, 6, 4, 7):                     # (4, 0) takes (4, 10)'s place; 7 takes 5's
        t.decode_steps(n, 100, 5)
    assert list(t._step_table) == [(6, 0), (4, 0), (7, 0)] and set(t._step_hot) == {4, 6, 7}
    assert all(t._step_table[(n, c)] is block for n, (c, block) in t._step_hot.items())
    assert np.array_equal(t.decode_steps(4, 100, 5), first)


def test_shared_timers_and_memos_change_nothing(h100, llama7b):
    """Simulations that reuse a cost model's timers (and their caches) equal fresh ones."""
    trace = _poisson(300, 4.0)
    shared = CostModel(load_calibration("measured"))

    def go(cost):
        return Simulation(trace, llama7b, one_instance(h100, count=2), cost_model=cost,
                          router="least_outstanding_tokens").run()
    first, second = go(shared), go(shared)
    fresh = go(CostModel(load_calibration("measured")))
    _frames_equal(first, second)
    _frames_equal(first, fresh)
    assert shared.timer(llama7b, Layout.uniform(h100)) is shared.timer(
        llama7b, Layout.uniform(load_device("H100-SXM")))


def test_small_chunks_and_windows_change_nothing(h100, llama7b, monkeypatch):
    """Timeline compaction, the arrival window and request-log chunks at tiny sizes."""
    trace = _poisson(400, 6.0, seed=2)
    base = Simulation(trace, llama7b, one_instance(h100, count=3), cost_model=CostModel(),
                      router="least_outstanding_tokens").run()
    monkeypatch.setattr(instance_mod, "CHUNK_ROWS", 7)
    monkeypatch.setattr(simulation_mod, "ARRIVAL_WINDOW", 5)
    sim = Simulation(trace, llama7b, one_instance(h100, count=3), cost_model=CostModel(),
                     router="least_outstanding_tokens")
    sim.log.chunk_rows = 11
    compactions = []
    real = RowLog.compact

    def spy(log):
        compactions.append(len(log.rows))
        real(log)
    monkeypatch.setattr(RowLog, "compact", spy)
    small = sim.run()
    # more compactions of non-empty logs than the final ones (3 timelines and the request log)
    assert sum(1 for n in compactions if n) > 4
    assert all(inst.timeline.view is not None and not inst.timeline.chunks
               for inst in sim.cluster.instances)
    _frames_equal(base, small)
    assert sim.results() is small


def test_streaming_to_parquet_gives_the_same_frames(h100, llama7b, tmp_path):
    pytest.importorskip("pyarrow")
    prompts = np.full(120, 800)
    prompts[5] = 9000                        # rejected (max_model_len): a reason to stream
    trace = make_trace(np.linspace(0, 20, 120), prompts, np.full(120, 60))
    def sim():
        return Simulation(trace, llama7b, one_instance(h100, count=2), cost_model=CostModel(),
                          router="least_outstanding_tokens")
    mem = sim().run()
    streamed = sim()
    streamed.log.chunk_rows = 13
    res = streamed.run(stream_to=tmp_path)
    assert (tmp_path / "requests.parquet").exists() and (tmp_path / "timeline.parquet").exists()
    assert not streamed.log.chunks                      # nothing kept in memory
    assert res.requests.rejected.sum() == 1 and "max_model_len" in res.requests.reason[5]
    _frames_equal(mem, res)
    assert res.summary() == mem.summary()


@pytest.mark.parametrize("router", ["least_outstanding_tokens", "round_robin"])
def test_routing_fast_paths_choose_the_same_replicas(h100, llama7b, router):
    """The LOT index over a large pool (and round robin's every-candidate path) route each
    request to the replica the plain scan picks."""
    trace = _poisson(1500, 40.0, seed=5)
    cost = CostModel()
    slow_params = {"index_from": 10 ** 9} if router == "least_outstanding_tokens" else {}

    def go(params):
        return Simulation(trace, llama7b, one_instance(h100, count=33), cost_model=cost,
                          router=router, router_params=params).run()
    fast = go({})
    if router == "least_outstanding_tokens":
        _frames_equal(fast, go(slow_params))
        _frames_equal(fast, go({"index_from": 8, "table": False}))
    assert fast.requests.instance.nunique() == 33


@pytest.mark.parametrize("mixed", [True, False])
def test_the_routers_scan_reads_the_loads_the_property_reads(h100, llama7b, monkeypatch, mixed):
    """Below the table's pool size the LOT router scans the candidates, reading each one's
    load inline (``least_loaded``): at every arrival it names the replica ``min`` over
    ``(outstanding_tokens / speed, id)`` names — replicas mid-run with steps ended, idle
    ones, ties among idle replicas going to the lowest id; two speeds (``mixed``: the loads
    divided by them) or one (every speed 1.0: the integer loads compared undivided)."""
    from simcluster.cluster import InstanceSpec
    from simcluster.serving.instance import Instance
    from simcluster.serving.config import InstanceConfig
    specs = one_instance(h100, count=3 if mixed else 6, max_model_len=8192)
    if mixed:
        specs.append(InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")),
                                  InstanceConfig(max_model_len=8192), count=3))
    real, seen = Instance.least_loaded, []

    def checked(candidates, scaled=True):
        got = real(candidates, scaled)
        want = min(candidates, key=lambda i: (i.outstanding_tokens / i.speed, i.id))
        mid = sum(i._live is not None and i._live.done_by(i.env.now - i._live.start)
                  > i._live.applied for i in candidates)
        seen.append((got is want, mid, len({i.speed for i in candidates}), scaled))
        return got
    monkeypatch.setattr(Instance, "least_loaded", staticmethod(checked))
    Simulation(_poisson(600, 20.0, seed=5, out_scale=2), llama7b, specs,
               cost_model=CostModel(), router="least_outstanding_tokens").run()
    assert len(seen) == 600 and all(ok for ok, _, _, _ in seen)
    assert sum(mid > 0 for _, mid, _, _ in seen) > 300      # loads read inside decode runs
    assert all(speeds == (2 if mixed else 1) and scaled == mixed
               for _, _, speeds, scaled in seen)


@pytest.mark.parametrize("mixed, matrix", [(False, False), (True, False), (True, True)])
def test_load_table_answers_every_query_as_the_scan(h100, llama7b, monkeypatch, mixed, matrix):
    """Every query of the LOT table over a large pool returns what ``min`` over
    ``(outstanding_tokens / speed, id)`` returns at that moment: windows renewed as long runs
    outlast them, submits mid-run, idle replicas; one speed (no division) and two speeds; the
    search and (``matrix``: as in pools of hundreds) the matrix of windows."""
    from simcluster.cluster import InstanceSpec
    from simcluster.policies.load_index import LoadTable
    from simcluster.serving.config import InstanceConfig
    specs = one_instance(h100, count=34 if mixed else 40, max_model_len=8192)
    if mixed:
        specs.append(InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")),
                                  InstanceConfig(max_model_len=8192), count=6))
    real, asked, renewed = LoadTable.least, [], []
    real_renew = LoadTable._renew
    monkeypatch.setattr(LoadTable, "MATRIX_FROM", 2 if matrix else 10 ** 9)

    def checked(table, now):
        got = real(table, now)
        want = min(table.pool, key=lambda i: (i.outstanding_tokens / i.speed, i.id))
        asked.append((got is want, (table.speed is None) != mixed
                      and (table.matrix is not None) == matrix))
        return got

    def renew(table, now):
        renewed.append(now)
        real_renew(table, now)
    monkeypatch.setattr(LoadTable, "least", checked)
    monkeypatch.setattr(LoadTable, "_renew", renew)
    trace = _poisson(1200, 30.0, seed=7, out_scale=4)
    Simulation(trace, llama7b, specs, cost_model=CostModel(),
               router="least_outstanding_tokens").run()
    assert len(asked) == 1200 and all(ok for ok, _ in asked)
    assert all(division for _, division in asked)
    assert len(renewed) > 20                  # long decode runs outlast their windows


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 ** 32), st.integers(1, 200), st.sampled_from(["even", "growing",
                                                                     "ragged", "admitted"]))
def test_a_runs_steps_ended_by_a_time_count_as_a_bisection(seed, k, shape):
    """A decode run's steps ended by an offset (bisected in a memoryview of its step ends,
    made at the first lookup) are ``bisect_right``'s count over the ends as Python floats for
    every offset — before the first end, at and between ends, just below each, past the last
    — and ``end_of`` reads each end, before and after the first lookup, in runs of equal,
    growing and ragged steps, or beginning with the admitting step's 0.0; lookups in any
    order."""
    from bisect import bisect_right
    from simcluster.serving.decode_run import DecodeRun
    rng = np.random.default_rng(seed)
    steps = {"even": np.full(k, 0.0125), "growing": 0.01 + 0.02 * np.arange(k) / k}.get(
        shape, rng.uniform(0.001, 0.05, size=k))
    if shape == "admitted":
        steps[0] = 0.0
    cum = np.add.accumulate(steps)
    ends = cum.tolist()
    run = DecodeRun(0.0, cum, 1, None, 0)
    assert [run.end_of(j) for j in range(1, k + 1)] == ends     # (no view yet: the array)
    mids = [(a + b) / 2 for a, b in zip([-1.0] + ends, ends + [ends[-1] + 1.0])]
    rels = ends + mids + [float(np.nextafter(e, -1.0)) for e in ends]
    for rel in rng.permutation(np.array(rels, dtype=float)).tolist():
        assert run.done_by(rel) == bisect_right(ends, rel), (rel, k)
    assert [run.end_of(j) for j in range(1, k + 1)] == ends


class _Run:
    """The part of a decode run the load table reads."""

    def __init__(self, start, steps, n):
        from simcluster.serving.decode_run import DecodeRun
        self.start, self.n = start, n
        self.cum = np.cumsum(steps)
        self.k = len(self.cum)
        self.done_by = DecodeRun.done_by.__get__(self)
        self.view = None
        self.skip = 0          # (no admitting step at offset 0.0: every step time is > 0)
        self.applied = 0


class _Replica:
    """What a LoadTable reads of a replica: its decode run in flight (``_live``, of which
    ``applied`` ended steps are applied) and outstanding tokens once those are."""

    def __init__(self, iid, env, speed):
        self.id, self.env, self.speed, self.load_watchers = iid, env, speed, []
        self._live, self._outstanding = None, 0

    def load(self, now):
        run = self._live
        if run is None:
            return self._outstanding
        return self._outstanding - run.n * (int((run.cum <= now - run.start).sum())
                                            - run.applied)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2 ** 32), st.booleans(), st.booleans())
def test_load_table_answers_as_the_scan_at_step_ends_and_ties(seed, speeds, matrix):
    """The table counts a step as ended exactly when its end offset is at most ``now -
    start``, by its search over complex keys and by its matrix of windows (queries at step
    ends, ties of loads, runs starting now, runs shorter and longer than a window, idle
    replicas, equal and unequal speeds): the replica ``min`` over ``(load / speed, id)``
    finds."""
    from types import SimpleNamespace
    from simcluster.policies.load_index import LoadTable
    rng = np.random.default_rng(seed)
    env = SimpleNamespace(_now=0.0)
    pool = [_Replica(i, env, float(rng.choice([1.0, 1.5])) if speeds else 1.0)
            for i in rng.permutation(6)]
    table = type("Table", (LoadTable,), {"MATRIX_FROM": 1 if matrix else 10 ** 9})(pool)
    assert (table.matrix is not None) == matrix
    for _ in range(60):
        inst = pool[int(rng.integers(len(pool)))]
        what = rng.integers(4)
        if what == 0:                          # a new run, starting now or a little back
            k = int(rng.choice([1, 3, table.window, table.window + 5, 200]))
            steps = rng.choice([0.25, 0.5, 0.125], size=k)   # (exact sums: ties at ends)
            start = env._now - float(rng.choice([0.0, 0.25, 0.5]))
            run = inst._live = _Run(start, steps, int(rng.integers(1, 4)))
            ended = int((run.cum <= env._now - start).sum())
            run.applied = int(rng.integers(0, ended + 1))     # (as a sync applies them)
            inst._outstanding = int(rng.integers(100, 110))    # (close loads: ties decide)
        elif what == 1:
            inst._live, inst._outstanding = None, int(rng.integers(90, 110))
        elif what == 2:
            inst._outstanding += int(rng.integers(1, 4))    # a submit mid-run (or while idle)
        else:
            env._now += float(rng.choice([0.0, 0.125, 0.25, 1.0]))
            want = min(pool, key=lambda i: (i.load(env._now) / i.speed, i.id))
            assert table.least(env._now) is want
            continue
        for watch in inst.load_watchers:
            watch(inst)


def test_load_table_routes_a_mixed_decode_pool_as_the_scan(llama7b, monkeypatch):
    """Prefill/decode pools whose decode pool (36 replicas, H100s and A100s, weighed by a
    decode batch) is routed by the LOT table: the frames of routing it by the plain scan."""
    import functools
    from simcluster.cluster import InstanceSpec
    from simcluster.cluster.pools import DisaggregatedCluster
    from simcluster.hardware import load_link
    from simcluster.serving.config import InstanceConfig
    cfg = InstanceConfig(max_model_len=8192)
    h100, a100 = (Layout.uniform(load_device(d)) for d in ("H100-SXM", "A100-80GB-PCIe"))
    trace = _poisson(1500, 60.0, seed=3)

    def go(params):
        specs = [InstanceSpec(h100, cfg, count=2, pool="prefill"),
                 InstanceSpec(h100, cfg, count=20, pool="decode"),
                 InstanceSpec(a100, cfg, count=16, pool="decode")]
        factory = functools.partial(DisaggregatedCluster, kv_link=load_link("NVLink4"),
                                    decode_router_params=params)
        return Simulation(trace, llama7b, specs, router="least_outstanding_tokens",
                          cost_model=CostModel(), cluster_factory=factory).run()
    from simcluster.policies.load_index import LoadTable
    real, asked = LoadTable.least, []
    monkeypatch.setattr(LoadTable, "least", lambda t, now: asked.append(now) or real(t, now))
    table = go({})
    handed_off = int((table.requests.output_tokens > 1).sum())   # (one token: no decode)
    assert len(asked) == handed_off > 1400    # every hand-off routed by the table
    _frames_equal(table, go({"index_from": 10 ** 9}))
    assert len(asked) == handed_off and table.requests.instance.nunique() > 30


def test_events_per_request_stay_few(h100, llama7b):
    """Events are iterations, never tokens: a Poisson trace costs under five SimPy events
    per request on one replica (arrival, cut of the decode run, prefill end, run end), with
    outputs 1x and 16x as long."""
    for scale in (1, 16):
        trace = _poisson(400, 3.0 / scale, seed=1, out_scale=scale)
        sim = Simulation(trace, llama7b, one_instance(h100, max_model_len=65536),
                         cost_model=CostModel())
        sim.run()
        assert next(sim.env._eid) / len(trace) < 5.0


def _states():
    joined = st.sampled_from([True, True, True, True, False])
    return st.lists(st.tuples(st.integers(1, 400), st.integers(1, 60), joined),
                    min_size=0, max_size=12)


def _waiting():
    """Waiting requests: (prompt tokens, KV complete — a hand-off — or not); 200,000 tokens
    need more blocks than any replica here has free."""
    return st.lists(st.tuples(st.sampled_from([50, 50, 900, 200_000]),
                              st.sampled_from([False, False, True])), min_size=0, max_size=3)


STEADY_SEEN = []


# (derandomized: the test below asserts these examples reach the steady case for every policy,
# which 3 of 10 random seeds missed at aa91866; a fixed set makes that check deterministic)
@pytest.mark.parametrize("name", sorted(BATCHERS))
@settings(max_examples=60, deadline=None, derandomize=True)
@given(decoding=_states(), waiting=_waiting(), mem=st.sampled_from([0.001, 0.25, 0.9]),
       chunked=st.booleans())
def test_steady_decode_agrees_with_schedule(name, decoding, waiting, mem, chunked):
    """Every batching policy that answers ``steady_decode`` says True only when schedule()
    would decode every running request and do nothing else (KV pressure included: the
    smallest memory setting leaves a few blocks); one that answers ``steady_with`` (of the
    blocks free now) says so exactly when schedule() does, with requests waiting too:
    prompts and hand-offs at the head that the blocks or the slots (``max_num_seqs`` 8) let
    in or not."""
    from simcluster.cluster import Cluster
    import simpy
    dev, model = load_device("H100-SXM"), model_preset("llama-2-7b")
    specs = one_instance(dev, memory_utilization=mem, chunked_prefill=chunked,
                         max_num_seqs=8, max_batched_tokens=2048)
    specs = [type(specs[0])(specs[0].layout, specs[0].config, batching=name)]
    env = simpy.Environment()
    cl = Cluster(env, model, specs, cost_model=CostModel())
    inst = cl.instances[0]
    inst._busy = True                          # hold the loop: we set the state by hand
    from simcluster.serving.request import Request
    bs = inst.config.block_size
    for rid, (kv, gen, join) in enumerate(decoding):
        req = Request(rid, 0.0, kv, gen + 5)
        req._kv, req._gen = kv, gen
        need = -(-kv // bs)
        if need > inst.kv.free_blocks:
            break
        inst.kv.alloc(need)
        req._blocks = need
        req.admit_seq = rid
        inst.running.append(req)
        if join:
            inst.group.join(req)
    for w, (prompt, handoff) in enumerate(waiting):
        req = Request(100 + w, 0.0, prompt, 5)
        if handoff:
            req._kv, req._gen = prompt, 1
        inst.waiting.append(req)
    plan = inst.batcher.schedule(0.0)
    planned = not (plan.prefill or plan.preempt or plan.admit) and plan.decode == inst.running
    steady_with = getattr(inst.batcher, "steady_with", None)
    if steady_with is not None and inst.running and inst.group.n == len(inst.running):
        # (its precondition: every running request a member, no step in flight)
        assert steady_with(inst.kv.free_blocks, inst.group.step_blocks()) is planned
    steady = getattr(inst.batcher, "steady_decode", None)
    if steady is None or not steady(0.0):
        return
    STEADY_SEEN.append(name)
    assert planned


def test_steady_decode_is_answered_in_the_common_case(h100, llama7b):
    """Not vacuous: with every running request decoding and nothing waiting, the policies
    that have the shortcut take it, and the hypothesis test above reached that case. With a
    request waiting (by hand: the derandomised examples under pytest seldom make a steady
    step with one, though they check ``steady_with``'s refusals): vLLM's
    ``steady_with`` says steady when the free blocks (for a prompt before the decodes'
    blocks without chunked prefill, after them with it; for a hand-off after them) or the
    slots do not let the head in, and not when they do, as schedule() plans."""
    import simpy
    from simcluster.cluster import Cluster
    from simcluster.serving.request import Request

    def replica(name, **cfg):
        specs = one_instance(h100, **cfg)
        specs = [type(specs[0])(specs[0].layout, specs[0].config, batching=name)]
        inst = Cluster(simpy.Environment(), llama7b, specs, cost_model=CostModel()).instances[0]
        for rid in range(2):          # two members, at a block edge: the step takes 2 blocks
            req = Request(rid, 0.0, 96, 10)
            req._kv, req._gen, req._blocks, req.admit_seq = 96, 1, 6, rid
            inst.kv.alloc(6)
            inst.running.append(req)
            inst.group.join(req)
        return inst
    for name in ("vllm", "hf_cb", "bucketed"):
        assert replica(name).batcher.steady_decode(0.0)

    def agrees(inst, waiting, steady):
        inst.waiting.extend(waiting)
        assert not inst.batcher.steady_decode(0.0)           # (requests wait)
        assert inst.batcher.steady_with(inst.kv.free_blocks, inst.group.step_blocks()) is steady
        plan = inst.batcher.schedule(0.0)
        assert (not (plan.prefill or plan.preempt or plan.admit)) is steady
    for chunked in (False, True):
        inst = replica("vllm", chunked_prefill=chunked, max_batched_tokens=4096)
        inst.kv.alloc(inst.kv.free_blocks - 8)               # 8 blocks free
        agrees(inst, [Request(9, 0.0, 8 * 16 + 1, 5)], True)    # a prompt of 9 blocks
        # a prompt of 7 blocks: admitted before the decodes' 2 blocks (vLLM v0), not after
        # them (chunked: decodes first)
        inst = replica("vllm", chunked_prefill=chunked, max_batched_tokens=4096)
        inst.kv.alloc(inst.kv.free_blocks - 8)
        agrees(inst, [Request(9, 0.0, 7 * 16, 5)], chunked)
        for blocks, steady in ((4, True), (5, False)):       # a hand-off needing 3 blocks
            inst = replica("vllm", chunked_prefill=chunked, max_batched_tokens=4096)
            inst.kv.alloc(inst.kv.free_blocks - blocks)
            handoff = Request(9, 0.0, 32, 5)
            handoff._kv, handoff._gen = 32, 1
            agrees(inst, [handoff], steady)
        inst = replica("vllm", chunked_prefill=chunked, max_num_seqs=2)   # no slot left
        agrees(inst, [Request(9, 0.0, 50, 5)], True)
    if not STEADY_SEEN:               # (run alone: the hypothesis test did not run before)
        for name in sorted(BATCHERS):
            test_steady_decode_agrees_with_schedule(name=name)
    assert {"vllm", "hf_cb", "bucketed"} <= set(STEADY_SEEN)


def test_minimal_events_keep_simpy_order_and_values(monkeypatch):
    """serving.clock.after orders its events exactly as timeouts scheduled at the same moment
    (time, then scheduling order) and hands the callback its value: as a tick on a Clock,
    through a Timeout on a plain SimPy environment (and where SimPy's internals are not
    reachable, the simulation's environment is a plain one)."""
    import simpy
    from simcluster.serving import clock
    for kind in (clock.Clock, simpy.Environment):
        env, seen = kind(), []
        env.timeout(1.0).callbacks.append(lambda ev: seen.append("timeout-a"))
        clock.after(env, 1.0, lambda v: seen.append(("after", v)), 7)
        env.timeout(1.0).callbacks.append(lambda ev: seen.append("timeout-b"))
        clock.after(env, 0.5, lambda v: seen.append(("early", v, env.now)))
        clock.at(env, 1.0, lambda v: seen.append(("at", v)), "x")
        ticks = [e for e in env._queue if type(e[3]) is tuple]
        assert len(ticks) == (3 if kind is clock.Clock else 0)
        env.run()
        assert seen == [("early", None, 0.5), "timeout-a", ("after", 7), "timeout-b",
                        ("at", "x")]
    for direct in (True, False):
        monkeypatch.setattr(clock, "DIRECT", direct)
        assert type(clock.environment(2.0)) is (clock.Clock if direct else simpy.Environment)
        assert clock.environment(2.0).now == 2.0


@pytest.mark.parametrize("disagg", [False, True])
def test_a_simulation_on_a_plain_simpy_environment_gives_the_same_frames(h100, llama7b,
                                                                       monkeypatch, disagg):
    """Where SimPy's internals are not reachable, the simulation runs on a plain SimPy
    environment: every tick a Timeout (the replicas' and the arrivals' own pushes not
    taken), no decode iteration folded into the run after it (folding needs absolute
    times). The frames are the same, bit for bit: one replica whose runs arrivals cut, and
    prefill and decode pools handing KV over a link (its flows' ends ticks too)."""
    from functools import partial
    import simpy
    from simcluster.cluster import InstanceSpec
    from simcluster.cluster.pools import DisaggregatedCluster
    from simcluster.hardware import load_link
    from simcluster.serving import clock
    from simcluster.serving.config import InstanceConfig
    trace = _poisson(300, 8.0, seed=5)
    if disagg:
        specs = [InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="prefill", count=2),
                 InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="decode", count=2)]
        kw = {"cluster_factory": partial(DisaggregatedCluster, kv_link=load_link("NVLink4"))}
    else:
        specs, kw = one_instance(h100), {}

    def go():
        sim = Simulation(trace, llama7b, specs, cost_model=CostModel(), **kw)
        res = sim.run()
        queues = {inst._queue is sim.env._queue for inst in sim.cluster.instances}
        return res, type(sim.env), queues, sum(inst._fold for inst in sim.cluster.instances)
    fast, kind, queues, folds = go()
    assert kind is clock.Clock and queues == {True} and folds == len(specs) + disagg * 2
    monkeypatch.setattr(clock, "DIRECT", False)
    slow, kind, queues, folds = go()
    assert kind is simpy.Environment and queues == {False} and folds == 0
    _frames_equal(fast, slow)
    assert fast.requests.finish_s.notna().all()
    if disagg:
        assert fast.requests.handoff_bytes.gt(0).sum() > 250
        assert fast.transfers.equals(slow.transfers)


def _drain_scenario(env, seen, fail=False, stop=False, stop_tick=False):
    """Processes, timeouts, ticks and a shared event, in one queue."""
    import simpy
    from simcluster.serving import clock
    shared = env.event()

    def worker(name, waits):
        for w in waits:
            yield env.timeout(w)
            seen.append((name, env.now))
        if name == "b":
            shared.succeed(name)
        value = yield shared
        seen.append((name, "woke", value, env.now))
        if fail and name == "a":
            raise ValueError("worker a failed")

    env.process(worker("a", [0.5, 0.25, 1.0]))
    env.process(worker("b", [0.75, 0.75]))
    for t in (0.5, 1.5, 1.5, 3.0):
        clock.after(env, t, lambda v: seen.append(("tick", v, env.now)), t)
    if stop:
        def halt(ev):
            raise simpy.core.StopSimulation("halted")
        ev = env.timeout(1.5)
        ev.callbacks += [halt, lambda e: seen.append(("after halt", env.now))]
    if stop_tick:                      # a tick's callback stops it
        def halt_tick(_):
            seen.append(("tick halts", env.now))
            raise simpy.core.StopSimulation("tick halted")
        clock.after(env, 1.25, halt_tick)


@pytest.mark.parametrize("case", ["plain", "fail", "stop", "stop-tick"])
def test_drain_processes_the_events_env_run_would(case):
    """clock.drain (Environment.run with step inlined, the simulation's loop), whole or a few
    events a call, sees the same events at the same times as env.run: with processes
    waiting on a shared event, an undefused failure (the same exception, caused by the
    original), and a callback that stops the simulation (the same value; the callbacks after
    it run when it resumes), also the one callback of a tick (``after`` on a Clock), which
    drain and the Clock's own step call without SimPy's list of callbacks; on a Clock and on
    a plain SimPy environment (Timeouts for the ticks) alike. A limit is a number of
    events."""
    import simpy
    from simcluster.serving import clock
    kw = {"fail": case == "fail", "stop": case == "stop", "stop_tick": case == "stop-tick"}
    results = []
    for kind in (clock.Clock, simpy.Environment):
        runs, events = [], []
        def sliced(env):           # as a run reporting progress drains: a few at a time
            while env.peek() != float("inf"):
                got = clock.drain(env, 2)
                if got is not None:
                    return got
            return None
        for loop in (lambda env: env.run(), clock.drain, sliced):
            env, seen = kind(), []
            _drain_scenario(env, seen, **kw)
            if case == "fail":
                with pytest.raises(ValueError, match="worker a failed") as err:
                    loop(env)
                assert isinstance(err.value.__cause__, ValueError)
            else:
                got = loop(env)
                assert got == {"stop": "halted", "stop-tick": "tick halted"}.get(case)
                if case.startswith("stop"):    # resumed: the rest of the callbacks, the rest
                    assert loop(env) is None
            runs.append((seen, env.now))
            events.append(next(env._eid))      # (as many events scheduled, the rescheduled too)
        assert runs[0] == runs[1] == runs[2]
        assert events[0] == events[1] == events[2]
        results.append(runs[0])
    assert results[0] == results[1]
    assert len(results[0][0]) >= 9
    for kind in (clock.Clock, simpy.Environment):      # a limit is a number of events
        env, seen = kind(), []
        for t in range(1, 6):
            clock.after(env, float(t), lambda v: seen.append(env.now))
        assert clock.drain(env, 3) is None and seen == [1.0, 2.0, 3.0]
        clock.drain(env, 5)
        assert seen == [1.0, 2.0, 3.0, 4.0, 5.0] and env.peek() == float("inf")


def test_succeed_last_runs_waiters_at_once_only_where_they_would_be_next():
    """clock.succeed_last, a callback's last act, runs the event's waiters at once when
    nothing else is due at this time (they would be processed next: the same order), and
    schedules the event as succeed() does when something is; either way the waiters see its
    value, and a second trigger is refused."""
    import simpy
    from simcluster.serving import clock
    for kind in (clock.Clock, simpy.Environment):
        direct = kind is clock.Clock
        for other_now in (False, True):
            env, seen = kind(), []
            done = env.event()
            done.callbacks.append(lambda ev: seen.append(("done", ev.value, env.now)))

            def last_act(_):
                if other_now:           # something else due at this time: it goes first
                    env.timeout(0.0).callbacks.append(lambda e: seen.append("other"))
                clock.succeed_last(env, done, 42)
                seen.append("after succeed_last")
            clock.after(env, 1.0, last_act)
            env.timeout(2.0).callbacks.append(lambda ev: seen.append("later"))
            env.run()
            inline = direct and not other_now
            first = ["after succeed_last"] + ["other"] * other_now
            want = ([("done", 42, 1.0)] + first if inline else first + [("done", 42, 1.0)])
            assert seen == want + ["later"]
            with pytest.raises(RuntimeError):
                (clock.succeed_last if direct else lambda env, ev, v: ev.succeed(v))(
                    env, done, 1)


def test_timeline_rows_read_as_one_sequence_across_chunks():
    """A RowLog reads as every row appended (chunks and recent rows alike); rows streamed out
    keep their numbers but are not held."""
    from simcluster.serving.rowlog import RowLog
    log = RowLog(("a", "b"), (np.int32, np.float64))
    rows = [(i, i / 2) for i in range(10)]
    for r in rows[:6]:
        log.append(r)
    log.compact()
    for r in rows[6:]:
        log.append(r)
    assert len(log) == 10 and list(log) == rows and log[7] == rows[7] and log[2] == rows[2]
    assert log[3:8] == rows[3:8] and log[-1] == rows[-1] and list(log.since(4)) == rows[4:]
    assert log[7:9] == rows[7:9] and log[8:] == rows[8:] and log[9:7] == []
    cols = log.columns()
    assert cols["a"].tolist() == list(range(10))
    streamed = []
    log2 = RowLog(("a", "b"), (np.int32, np.float64), sink=streamed.append)
    for r in rows[:4]:
        log2.append(r)
    log2.compact()
    log2.append(rows[4])
    assert len(log2) == 5 and list(log2) == [rows[4]] and log2[4] == rows[4]
    assert streamed[0]["a"].tolist() == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        log2[1]


def test_timeline_row_that_does_not_fit_its_columns_is_refused_where_appended():
    """A float in an integer column, or an integer out of its column's range, is refused at the
    append (numpy's conversion of row tuples would truncate the float silently)."""
    import struct

    from simcluster.serving.rowlog import RowLog
    log = RowLog(("a", "b"), (np.int32, np.float64))
    with pytest.raises(struct.error):
        log.append((2.7, 1.0))
    with pytest.raises(struct.error):
        log.append((1 << 40, 1.0))
    assert len(log) == 0 and log.held() == 0
    with pytest.raises(TypeError, match="no packed layout"):
        RowLog(("s",), (np.dtype("U4"),))


def test_timeline_rows_moved_into_frame_columns_read_the_same():
    """After move_into the log holds no chunk of its own: it reads its rows from the columns
    they moved into (widened to int64), rows appended later are still its own, and a second
    move is refused."""
    from simcluster.serving.rowlog import RowLog
    log = RowLog(("a", "b"), (np.int32, np.float64), chunk_rows=4)
    rows = [(i, i / 2) for i in range(10)]
    for r in rows[:6]:
        log.append(r)
    log.compact()
    for r in rows[6:9]:
        log.append(r)
    out = {"a": np.full(12, -1, dtype=np.int64), "b": np.full(12, np.nan)}
    assert log.move_into(out, 2) == 9
    assert log.chunks == [] and log.held() == 0 and not log.rows
    assert out["a"][2:11].tolist() == list(range(9)) and out["a"][:2].tolist() == [-1, -1]
    log.append(rows[9])
    assert list(log) == rows and log[3] == rows[3] and log[9] == rows[9]
    assert list(log.since(7)) == rows[7:] and log[-2] == rows[8]
    log.compact()
    assert list(log.since(5)) == rows[5:] and log.columns()["a"].tolist() == list(range(10))
    with pytest.raises(RuntimeError):
        log.move_into(out, 0)


def test_requests_keep_their_rare_fields_per_request():
    from simcluster.serving.request import Request
    a, b = Request(0, 0.0, 10, 5), Request(1, 0.0, 10, 5)
    a.reason, a.handoff_bytes = "why", 3.5
    a.preemptions += 1
    assert (b.reason, b.handoff_bytes, b.preemptions) == ("", 0, 0)
    assert (a.reason, a.handoff_bytes, a.preemptions) == ("why", 3.5, 1)


def test_large_decode_pool_index_and_streaming_with_hand_offs(h100, llama7b, tmp_path):
    """A disaggregated cluster whose decode pool is large enough for the LOT index (its
    speeds are set after the router is bound) and of two devices: the same frames as the
    plain scan, and as a run streamed to Parquet."""
    pytest.importorskip("pyarrow")
    from functools import partial
    from simcluster.cluster import InstanceSpec
    from simcluster.cluster.pools import DisaggregatedCluster
    from simcluster.hardware import load_link
    from simcluster.serving.config import InstanceConfig
    rng = np.random.default_rng(4)
    n = 600
    trace = make_trace(np.cumsum(rng.exponential(1 / 30, n)), rng.integers(20, 1500, n),
                       rng.integers(2, 200, n))
    specs = [InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="prefill", count=2),
             InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="decode", count=20),
             InstanceSpec(Layout.uniform(load_device("A100-80GB-PCIe")), InstanceConfig(),
                          pool="decode", count=14)]

    def go(params, stream=None):
        factory = partial(DisaggregatedCluster, kv_link=load_link("NVLink4"),
                          decode_router_params=params)
        sim = Simulation(trace, llama7b, specs, cost_model=CostModel(),
                         router="least_outstanding_tokens", cluster_factory=factory)
        return sim.run(stream_to=stream)
    fast = go({})
    assert fast.requests.handoff_bytes.gt(0).all()
    _frames_equal(fast, go({"index_from": 10 ** 9}))
    _frames_equal(fast, go({}, stream=tmp_path))


def test_engine_envelope_counts_every_iteration():
    """A timer that counts its calls (an engine model's envelope) is asked every iteration:
    the memo of iteration times is off for it, so the counts are those of stepping."""
    import dataclasses

    from simcluster.cluster import InstanceSpec
    from simcluster.engines import load_engine
    from simcluster.engines.envelope import Envelope
    from simcluster.serving import InstanceConfig
    from simcluster.workload import Trace

    spec = load_engine("hf-cb-h200-graphs-7b")
    spec = dataclasses.replace(spec, envelope=Envelope(max_new_tokens=1e9, max_seqs=1e9,
                                                       max_kv_tokens=1e9, max_context=1e9))
    n = 40         # the same prompt shapes again and again: a memo would answer most
    trace = Trace(np.arange(n) * 0.05, np.full(n, 300), np.full(n, 30))
    config = InstanceConfig(**{**spec.scheduler, "max_steady_steps": 1})
    inst = InstanceSpec(Layout.uniform(load_device("H200")), config,
                        batching=spec.batching, batching_params=spec.batching_params)
    res = Simulation(trace, model_preset("llama-2-7b"), [inst],
                     cost_model=spec.cost_model()).run()
    counter = next(iter(res.envelope.values()))
    # (plus the one reference iteration the routers' speed is measured with, as on main)
    assert counter.iterations == int(res.timeline.iterations.sum()) + 1


def test_default_hand_offs_on_callbacks_equal_the_process_form(h100, llama7b, monkeypatch):
    """The default KV hand-off runs on callbacks (one event per transfer): the same frames
    as shipping in a SimPy process with the link as a Resource, transfers queued on a slow
    link included."""
    from functools import partial
    from simcluster.cluster import InstanceSpec
    from simcluster.cluster.pools import DisaggregatedCluster
    from simcluster.hardware import LinkSpec
    from simcluster.serving.config import InstanceConfig
    rng = np.random.default_rng(8)
    n = 400
    trace = make_trace(np.cumsum(rng.exponential(1 / 20, n)), rng.integers(20, 3000, n),
                       rng.integers(2, 100, n))
    specs = [InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="prefill", count=2),
             InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="decode", count=3)]
    slow = LinkSpec(name="slow", kind="pcie", bw_bytes_per_s=4e9, latency_s=2e-5)

    def go():
        factory = partial(DisaggregatedCluster, kv_link=slow)
        sim = Simulation(trace, llama7b, specs, cost_model=CostModel(),
                         router="least_outstanding_tokens", cluster_factory=factory)
        return sim.run()
    fast = go()
    r = fast.requests
    assert (r.handoff_start_s > r.first_token_s + 1e-9).any()     # some waited for the link

    def ship_in_a_process(self, req, source):
        def proc():
            yield from ship_with_a_resource(self, [req], source)
            self.deliver([req])
        self.env.process(proc())
    monkeypatch.setattr(DisaggregatedCluster, "_send", ship_in_a_process)
    _frames_equal(fast, go())


@pytest.mark.parametrize("case", ["plain", "kv_pressure", "index_and_syncs"])
def test_admitting_hand_offs_folded_into_the_run_after_changes_nothing(h100, llama7b,
                                                                       monkeypatch, case):
    """A decode replica admits hand-offs in one decode iteration, after which a decode run
    usually starts: the two are one run (one event fewer). With every admission an iteration
    of its own instead, the frames are the same, bit for bit: under KV pressure and a step
    cap of 8 (runs sized by blocks and cap; most admissions leave hand-offs waiting that
    the blocks do not let in after the first step either), with arrivals cutting the
    admitting step (the cut lands on that step's own end), and with the LOT index reading
    the folded runs and an offload policy that syncs the decode pool mid-run."""
    from functools import partial
    import simcluster.serving.decode_run as decode_run_mod
    from simcluster.cluster import InstanceSpec
    from simcluster.cluster.pools import DisaggregatedCluster
    from simcluster.hardware import load_link
    from simcluster.serving.config import InstanceConfig
    rng = np.random.default_rng(11)
    n = 500
    trace = make_trace(np.cumsum(rng.exponential(1 / 25, n)), rng.integers(20, 2000, n),
                       rng.integers(2, 300, n))
    dec = {"memory_utilization": 0.2, "max_steady_steps": 8} if case == "kv_pressure" else {}
    specs = [InstanceSpec(Layout.uniform(h100), InstanceConfig(), pool="prefill", count=2),
             InstanceSpec(Layout.uniform(h100), InstanceConfig(**dec), pool="decode", count=3)]
    kw = ({"decode_router_params": {"index_from": 2}, "offload": "pool_room"}
          if case == "index_and_syncs" else {})
    folds, first_step_cuts, waited = [], [], []
    real_fold, real_at = instance_mod.Instance._start_folded, decode_run_mod.at

    def fold(self, plan):
        waiting = bool(self.waiting)       # (after the plan's admissions: still waiting)
        folds.append(real_fold(self, plan))
        waited.append(folds[-1] and waiting)
        return folds[-1]

    def at(env, when, callback, value=None):
        if callback.__name__ == "_run_cut":
            first_step_cuts.append(when)
        return real_at(env, when, callback, value)

    def go():
        factory = partial(DisaggregatedCluster, kv_link=load_link("NVLink4"), **kw)
        sim = Simulation(trace, llama7b, specs, cost_model=CostModel(),
                         router="least_outstanding_tokens", cluster_factory=factory)
        return sim.run(), next(sim.env._eid)
    monkeypatch.setattr(instance_mod.Instance, "_start_folded", fold)
    monkeypatch.setattr(decode_run_mod, "at", at)
    fast, events = go()
    assert fast.requests.handoff_bytes.gt(0).sum() > n / 2
    if case == "kv_pressure":          # (most admissions leave requests waiting: folded too)
        assert sum(waited) > 100 and sum(folds) > n / 4
    else:
        assert sum(folds) > n / 4 and first_step_cuts
    monkeypatch.setattr(instance_mod.Instance, "_start_folded", lambda self, plan: False)
    slow, slow_events = go()
    _frames_equal(fast, slow)
    assert events < slow_events


@pytest.mark.parametrize("chunked", [False, True])
def test_preempting_steps_folded_into_the_run_after_change_nothing(h100, llama7b, monkeypatch,
                                                                   chunked):
    """Under KV pressure a decode step preempts the last admitted request, which then waits
    at the head of the queue until blocks come free: where the blocks after that step do not
    let the head (or anything behind it) in, the step and the run after it are one run.
    With every preempting step an iteration of its own instead, the frames are the same,
    bit for bit, arrivals cutting folded steps included; one step per event gives the same
    requests. (With chunked prefill and a budget of 512 tokens, a victim's first chunk
    often fits in the blocks it freed: those steps are not folded.)"""
    import simcluster.serving.decode_run as decode_run_mod
    trace = _poisson(600, 4.0, seed=3)
    folds, first_step_cuts = [], []
    real_fold, real_at = instance_mod.Instance._start_folded, decode_run_mod.at

    def fold(self, plan):
        folds.append((bool(plan.preempt), real_fold(self, plan)))
        return folds[-1][1]

    def at(env, when, callback, value=None):
        if callback.__name__ == "_run_cut":
            first_step_cuts.append(when)
        return real_at(env, when, callback, value)

    def go(**cfg):
        sim = Simulation(trace, llama7b,
                         one_instance(h100, memory_utilization=0.2, chunked_prefill=chunked,
                                      max_batched_tokens=512 if chunked else 8192, **cfg),
                         cost_model=CostModel())
        return sim.run(), next(sim.env._eid)
    monkeypatch.setattr(instance_mod.Instance, "_start_folded", fold)
    monkeypatch.setattr(decode_run_mod, "at", at)
    fast, events = go()
    assert fast.requests.preemptions.sum() > 50
    assert sum(1 for pre, ok in folds if pre and ok) > 50 and first_step_cuts
    monkeypatch.setattr(instance_mod.Instance, "_start_folded",
                        lambda self, plan: not plan.preempt and real_fold(self, plan))
    slow, slow_events = go()
    _frames_equal(fast, slow)
    assert events < slow_events
    stepped, _ = go(max_steady_steps=1)
    assert (stepped.requests.preemptions == fast.requests.preemptions).all()
    np.testing.assert_allclose(stepped.requests.finish_s, fast.requests.finish_s, rtol=1e-9)


def test_bundled_hand_offs_folded_into_runs_change_nothing(monkeypatch):
    """LLMShare's cluster (prompt servers that also decode, KV shipped layer by layer and
    released while a replica's admitting step runs): the same frames without the fold."""
    from simcluster.experiment import load_experiment
    import simcluster.serving.instance as inst
    path = Path(__file__).resolve().parents[1] / "experiments" / "llmshare_h100.toml"
    exp = load_experiment(path)
    fast = exp.simulation().run()
    monkeypatch.setattr(inst.Instance, "_start_folded", lambda self, plan: False)
    _frames_equal(fast, exp.simulation().run())


def test_loose_decode_runs_equal_stepping(h100, llama7b, monkeypatch):
    """Decode runs of requests outside the decode group (the plan is not exactly the group:
    here every odd request is kept out of it) advance them one by one, under KV pressure that
    sizes runs by their blocks — the same results as one step per event."""
    from simcluster.serving.decode_group import DecodeGroup
    real = DecodeGroup.can_join
    monkeypatch.setattr(DecodeGroup, "can_join",
                        lambda g, req: req.id % 2 == 0 and real(g, req))
    trace = _poisson(160, 8.0, seed=5)

    def go(steps):
        return Simulation(trace, llama7b,
                          one_instance(h100, count=2, max_steady_steps=steps,
                                       memory_utilization=0.2, max_batched_tokens=4096),
                          router="least_outstanding_tokens", cost_model=CostModel()).run()
    fast, slow = go(1_000_000), go(1)
    assert len(fast.timeline) < len(slow.timeline) / 3
    assert (fast.timeline.iterations > 1).any()
    assert (fast.requests.instance == slow.requests.instance).all()
    np.testing.assert_allclose(fast.requests.finish_s, slow.requests.finish_s, rtol=1e-9)
    np.testing.assert_allclose(fast.requests.first_token_s, slow.requests.first_token_s,
                               rtol=1e-9)
    tl_f, tl_s = fast.timeline, slow.timeline
    assert (tl_f.decode_seqs * tl_f.iterations).sum() == (tl_s.decode_seqs * tl_s.iterations).sum()


def test_lone_decode_steps_read_the_step_table(h100, llama7b, monkeypatch):
    """A single pure-decode iteration of the plain cost model is read from the decode step
    table (the time a run's step has), without evaluating the scalar formula; iterations with
    a prompt chunk, and timers that count their calls, still ask ``time``."""
    from simcluster.serving.steps import iteration_time
    timer = CostModel().timer(llama7b, Layout.uniform(h100))
    asked = []
    real = IterationTimer.time
    monkeypatch.setattr(IterationTimer, "time", lambda self, *a, **k: asked.append(a) or
                        real(self, *a, **k))
    for n, s in ((1, 700), (37, 37 * 900 + 5), (120, 16384 * 3 - 7)):
        memo = {}
        t = iteration_time(memo, timer, ((), (), n, s, n))
        assert t == float(timer.decode_steps(n, s, 1)[0]) and memo == {((), (), n, s, n): t}
    assert asked == []
    iteration_time({}, timer, ((300,), (0,), 4, 4000, 5))        # a prompt chunk: time()
    iteration_time({}, timer, ((), (), 4, 4000, 2))              # fewer samples: time()
    assert len(asked) == 2


def _decoding_requests(kvs, bs, group=None):
    """Running requests decoding at KV lengths ``kvs`` (tight blocks, admission order), members
    of ``group`` if given (its clock already set), else stepped one by one."""
    from simcluster.serving.request import Request
    running = []
    for rid, kv in enumerate(kvs):
        req = Request(rid, 0.0, kv, 10_000)
        req._kv, req._gen, req._blocks, req.admit_seq = kv, 1, -(-kv // bs), rid
        if group is not None:
            group.join(req)
        running.append(req)
    return running


def _group_and_loose_plans(kvs, bs, free, clock=0):
    """take_decodes over the requests as decode group members, and over the same requests
    outside any group (its plain per-request loop): the two plans as request ids and the
    blocks left."""
    from simcluster.policies.batching import Plan, take_decodes
    from simcluster.serving.decode_group import DecodeGroup
    g = DecodeGroup(bs)
    g.clock = clock
    plans = []
    for group in (g, None):
        plan, left = take_decodes(_decoding_requests(kvs, bs, group), Plan(), free, bs)
        assert not (plan.prefill or plan.admit)
        plans.append(([r.id for r in plan.decode], [r.id for r in plan.preempt], left))
    return plans


def test_group_decodes_take_free_blocks_under_pressure():
    """With fewer free blocks than decoding requests but enough for those that start a new
    block, every group member decodes (the O(1) path): the plan and the blocks left are those
    of checking each request."""
    seen = 0
    kvs = (16, 33, 48, 5, 64, 17, 31, 80, 2, 96, 11, 12)
    for free in range(0, 12):
        fast, slow = _group_and_loose_plans(kvs, 16, free)
        assert fast == slow
        seen += not fast[1] and free < len(kvs)
    assert seen >= 5          # (the relaxed case was reached: n > free >= blocks needed)


@pytest.mark.parametrize("kvs, free, decode, preempt, left", [
    # the last member (7 blocks) covers the one later member that starts a block: take_decodes
    # answers without the loop (O(1)), preempting it alone
    ((16, 32, 5, 48, 100), 1, [0, 1, 2, 3], [4], 5),
    # the last member holds 1 block, two later members start one: a second victim
    ((16, 32, 5, 48, 7), 1, [0, 1, 3], [4, 2], 0),
    # the (free + 1)-th member that starts a block is the last one: the one before it goes
    ((5, 16, 7, 32), 1, [0, 1, 3], [2], 0),
])
def test_group_shortage_with_one_victim_or_more(kvs, free, decode, preempt, left):
    """A block shortage in a decode group where preempting the last member covers the rest
    (the O(1) answer) and where it does not, or the last member is the one short of a block:
    the plan as written out here, and as the plain per-request loop gives it."""
    fast, slow = _group_and_loose_plans(kvs, 16, free)
    assert fast == slow == (decode, preempt, left)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(kvs=st.lists(st.integers(1, 200), min_size=1, max_size=40), clock=st.integers(0, 40),
       free=st.integers(0, 12), bs=st.sampled_from([1, 4, 16]))
def test_group_decodes_under_a_block_shortage_preempt_as_one_by_one(kvs, clock, free, bs):
    """When the group's members need more blocks than are free, the members before the first
    that finds none decode at once (by their KV class) and the rest go one by one: the plan
    (decodes, preemptions, in order) and the blocks left are those of the plain loop."""
    fast, slow = _group_and_loose_plans(kvs, bs, free, clock)
    assert fast == slow


def _reference_take_decodes(running, plan, free, bs, limit=None):
    """take_decodes as it read before its loop learned the members' stored counts: every
    request's counts through its properties, the victim searched from the end each time."""
    from simcluster.policies.batching import blocks_for
    group = running[0].group if running else None
    if group is not None and group.n == len(running) and (limit is None or limit >= group.n):
        need = group.step_blocks()
        if need <= free:
            plan.decode.extend(running)
            return plan, free - need
        lead = group.lead_before_shortage(free)
        plan.decode.extend(running[:lead])
        decoding, free = running[lead:], 0
    else:
        decoding = [r for r in running if r.kv_tokens >= r.prefill_target]
        if limit is not None:
            decoding = decoding[:limit]
    if len(decoding) <= free:
        need = sum(1 for r in decoding if r.kv_tokens + 1 > r.blocks * bs)
        plan.decode.extend(decoding)
        return plan, free - need
    gone = set()
    for req in decoding:
        if id(req) in gone:
            continue
        need = blocks_for(req, req.kv_tokens + 1, bs)
        while need > free:
            victim = next((v for v in reversed(running) if id(v) not in gone and v is not req),
                          None)
            if victim is None:
                break
            gone.add(id(victim))
            plan.preempt.append(victim)
            free += victim.blocks - victim.shared_blocks
            if victim in plan.decode:
                plan.decode.remove(victim)
                free += blocks_for(victim, victim.kv_tokens + 1, bs)
        if need > free:
            gone.add(id(req))
            plan.preempt.append(req)
            free += req.blocks - req.shared_blocks
            continue
        free -= need
        plan.decode.append(req)
    return plan, free


@settings(max_examples=400, derandomize=True, deadline=None)
@given(reqs=st.lists(st.tuples(st.sampled_from(["member", "loose", "loose+1", "prefill"]),
                               st.integers(1, 120), st.integers(0, 3)), min_size=1, max_size=30),
       clock=st.integers(0, 40), free=st.integers(0, 10), bs=st.sampled_from([1, 4, 16]),
       limit=st.one_of(st.none(), st.integers(1, 30)))
def test_take_decodes_plans_as_the_request_by_request_loop(reqs, clock, free, bs, limit):
    """take_decodes over a mix of decode group members, loose decodes (tight blocks or one
    block ahead), prefilling requests and shared blocks, with and without a limit: the plan
    (decodes and preemptions, in order) and the blocks left are those of the loop that reads
    every request's counts through its properties and searches each victim from the end."""
    from simcluster.policies.batching import Plan, take_decodes
    from simcluster.serving.decode_group import DecodeGroup
    from simcluster.serving.request import Request

    def state():
        g = DecodeGroup(bs)
        g.clock = clock
        running = []
        for rid, (kind, kv, shared) in enumerate(reqs):
            req = Request(rid, 0.0, kv if kind != "prefill" else kv + 5, 10_000)
            req._kv, req._gen, req.admit_seq = kv, 1 if kind != "prefill" else 0, rid
            req._blocks = -(-kv // bs) + (kind == "loose+1")
            req.shared_blocks = min(shared, req._blocks)
            if kind == "member":
                g.join(req)
            running.append(req)
        return running

    out = []
    for fn in (take_decodes, _reference_take_decodes):
        plan, left = fn(state(), Plan(), free, bs, limit)
        out.append(([r.id for r in plan.decode], [r.id for r in plan.preempt], left))
    assert out[0] == out[1]


def _reference_schedule(b, now):
    """VLLMBatching.schedule as it read before it skipped the admission pass that cannot admit
    and the decode group members in the chunked pass over prompts (with the reference
    take_decodes)."""
    from simcluster.policies.batching import Plan, blocks_for
    inst, cfg = b.inst, b.inst.config
    plan, free = Plan(), inst.kv.free_blocks
    take = _reference_take_decodes
    if not cfg.chunked_prefill:
        head = inst.waiting[0] if inst.waiting else None
        if head is not None and head.kv_tokens < head.prefill_target:
            plan, _ = b._admit(plan, free, cfg.max_batched_tokens, chunked=False)
            if plan.prefill:
                return plan
        plan, free = take(inst.running, Plan(), free, cfg.block_size)
        if not plan.preempt:
            plan, free = b._admit(plan, free, cfg.max_batched_tokens, chunked=False)
        return plan
    plan, free = take(inst.running, plan, free, cfg.block_size)
    budget = cfg.max_batched_tokens - len(plan.decode)
    preempted = set(id(r) for r in plan.preempt)
    for req in inst.running:
        if budget <= 0:
            break
        if req.prefilling and id(req) not in preempted:
            chunk = min(req.prefill_target - req.kv_tokens, budget)
            need = blocks_for(req, req.kv_tokens + chunk, cfg.block_size)
            if need > free:
                break
            free -= need
            budget -= chunk
            plan.prefill.append((req, chunk))
    if not plan.preempt:
        plan, free = b._admit(plan, free, budget, chunked=True)
    return plan


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.one_of(st.integers(1, 400),       # (block multiples: a
                                    st.integers(1, 25).map(lambda k: 16 * k)),  # new block)
                          st.integers(0, 60),
                          st.sampled_from(["member", "member", "loose", "prefill"])),
                max_size=14),
       st.lists(st.tuples(st.integers(1, 120), st.booleans()), max_size=4),
       st.sampled_from([0.0005, 0.001, 0.25]), st.booleans(), st.integers(0, 6))
def test_vllm_schedule_plans_as_before(running, waiting, mem, chunked, spare):
    """vLLM's schedule() — KV pressure, prompts and hand-offs at the head, partly prefilled
    prompts (chunked), decode group members and loose requests — gives the plan of the
    reference that asks every admission pass and reads every running request."""
    from simcluster.cluster import Cluster
    from simcluster.serving.request import Request
    import simpy
    dev, model = load_device("H100-SXM"), model_preset("llama-2-7b")
    specs = one_instance(dev, memory_utilization=mem, chunked_prefill=chunked,
                         max_num_seqs=12, max_batched_tokens=2048)
    inst = Cluster(simpy.Environment(), model, specs, cost_model=CostModel()).instances[0]
    inst._busy = True
    bs = inst.config.block_size
    for rid, (kv, gen, kind) in enumerate(running):
        target = kv + 1 + gen % 24 if kind == "prefill" else kv
        req = Request(rid, 0.0, target, gen + 5)
        req._kv, req._gen, req.admit_seq = kv, gen if kind != "prefill" else 0, rid
        need = -(-kv // bs)
        if need > inst.kv.free_blocks:
            break
        inst.kv.alloc(need)
        req._blocks = need
        inst.running.append(req)
        if kind == "member":
            inst.group.join(req)
    inst.kv.alloc(max(0, inst.kv.free_blocks - spare))     # a few blocks left, or none
    for w, (prompt, handed_off) in enumerate(waiting):
        if handed_off:                   # KV complete (a hand-off): admitted as a decode
            prompt = prompt % 40 + 1
        req = Request(100 + w, 0.0, prompt, 5)
        if handed_off:
            req._kv, req._gen = prompt, 1
        inst.waiting.append(req)
    ids = lambda p: ([r.id for r, _ in p.prefill], [c for _, c in p.prefill],  # noqa: E731
                     [r.id for r in p.decode], [r.id for r in p.preempt],
                     [r.id for r in p.admit])
    plan = inst.batcher.schedule(0.0)
    assert ids(plan) == ids(_reference_schedule(inst.batcher, 0.0))
    members = inst.group.n
    cases = (
        {"hand-off admitted": any(r.id >= 100 for r in plan.decode),
         "prompt admitted": any(r.id >= 100 for r, _ in plan.prefill),
         "partial prompt": any(r.id < 100 for r, _ in plan.prefill),
         "partial prompt beside members": (members == len(inst.running) - 1 and
                                           any(r.id < 100 for r, _ in plan.prefill)),
         "members preempted": members > 1 and any(r.group for r in plan.preempt),
         "mixed preempted": 0 < members < len(inst.running) and bool(plan.preempt)})
    SCHEDULES_SEEN.update(k for k, seen in cases.items() if seen)


SCHEDULES_SEEN: set = set()


def test_vllm_schedule_examples_reach_every_case():
    """Not vacuous: the examples above reach hand-off and prompt admissions, chunks of
    partly prefilled prompts (one of them beside a whole decode group too) and preemptions
    of group members and of mixed batches."""
    test_vllm_schedule_plans_as_before()
    assert SCHEDULES_SEEN == {"hand-off admitted", "prompt admitted", "partial prompt",
                              "partial prompt beside members", "members preempted",
                              "mixed preempted"}


def test_a_simulation_takes_names_frames_and_one_spec_and_names_a_wrong_argument(h100, llama7b):
    import pandas as pd

    from simcluster.cluster import InstanceSpec
    from simcluster.cost import Layout
    from simcluster.models import model_preset
    from simcluster.workload import Trace
    spec = InstanceSpec(Layout.uniform(h100), count=1)
    df = pd.DataFrame({"arrival_s": [0.0, 0.5, 1.0], "prompt_tokens": [100, 200, 300],
                       "output_tokens": [5, 6, 7]})
    ref = Simulation(Trace.from_frame(df), llama7b, [spec]).run().requests
    # a frame for the trace, a preset's name for the model, one spec for the list: the same
    same = Simulation(df, "llama-2-7b", spec).run().requests
    pd.testing.assert_frame_equal(ref, same)
    assert model_preset("llama-2-7b") == llama7b
    for args, says in [((df[["prompt_tokens"]], llama7b, [spec]), "missing column 'arrival_s'"),
                       ((3, llama7b, [spec]), "trace: expected a Trace"),
                       ((df, 7, [spec]), "model: expected a ModelSpec"),
                       ((df, llama7b, [{"device": "H100-SXM"}]), "instances[0]: expected an "
                                                                 "InstanceSpec; got dict"),
                       ((df, llama7b, "H100-SXM"), "instances: expected InstanceSpecs"),
                       ((df, llama7b, []), "at least one InstanceSpec")]:
        with pytest.raises((TypeError, ValueError)) as err:
            Simulation(*args)
        assert says in str(err.value), err.value
    # an SLO of -1 s failed every request without a word; a count of 2.5 failed mid-build
    for kw, says in [({"ttft_slo_s": -1}, "'ttft_slo_s': expected None or a number of "
                                          "seconds > 0"),
                     ({"tpot_slo_s": "0.05"}, "'tpot_slo_s': expected None"),
                     ({"tpot_slo_s": float("nan")}, "'tpot_slo_s': expected None")]:
        with pytest.raises(ValueError, match=says):
            Simulation(df, llama7b, spec, **kw)
    with pytest.raises(ValueError, match="count must be a whole number >= 1, got 2.5"):
        InstanceSpec(Layout.uniform(h100), count=2.5)
    # a cost model by its calibration's name, like the trace and the model; anything else
    # without a timer was an AttributeError "'int' object has no attribute 'timer'" mid-build
    named = Simulation(df, llama7b, spec, cost_model="datasheet").run().requests
    pd.testing.assert_frame_equal(ref, named)
    with pytest.raises(TypeError, match="cost_model: expected a CostModel .*; got int"):
        Simulation(df, llama7b, spec, cost_model=3)
    # a spec's fields are checked where it is made: a device name for the layout was an
    # AttributeError ('stage_tp') inside the cluster, a pool name of 'nope' was ignored
    for kw, says in [({"layout": "H100-SXM"}, "InstanceSpec.layout: expected a Layout "
                                              r"\(Layout.uniform.*got str 'H100-SXM'"),
                     ({"config": {"max_num_seqs": 8}}, "InstanceSpec.config: expected an "
                                                       "InstanceConfig; got dict"),
                     ({"batching_params": 3}, "InstanceSpec.batching_params: expected a "
                                              "mapping; got int"),
                     ({"pool": "nope"}, "InstanceSpec.pool must be one of '', 'prefill', "
                                        "'decode' .*got 'nope'")]:
        with pytest.raises((TypeError, ValueError), match=says):
            InstanceSpec(**{"layout": Layout.uniform(h100), **kw})
    # pools on a cluster without them were served as one plain pool, without a word
    pooled = [InstanceSpec(Layout.uniform(h100), pool=p) for p in ("prefill", "decode")]
    with pytest.raises(ValueError, match=r"instances name pools \['decode', 'prefill'\] but "
                                         "Cluster has none: pass cluster_factory="):
        Simulation(df, llama7b, pooled)
    # a TP degree of 1.5 or '2' was "can't multiply sequence by non-int of type 'float'"
    for tp in (1.5, "2", 0, True):
        with pytest.raises(ValueError, match=f"whole numbers >= 1, got tp={tp!r}"):
            Layout.uniform(h100, tp=tp, link="NVLink4")
    sim = Simulation(df, llama7b, InstanceSpec(Layout.uniform(h100), count=2), name="t",
                     router="round_robin", ttft_slo_s=1)
    assert repr(sim) == ("<Simulation 't': 3 requests of a trace, model Llama-2-7B, "
                         "2 instance(s), router round_robin; not run yet; .run()>")
    # run()'s arguments are checked before it starts: progress='x' failed at its first call,
    # after the whole run, whose results were then lost (a Simulation runs once)
    for kw, says in [({"progress": "x"}, "progress: expected True, False, None or a callable"),
                     ({"progress_every_s": -1}, "progress_every_s: expected a number of "
                                                "seconds >= 0"),
                     ({"stream_to": __file__}, "field 'stream_to': '.*' is a file")]:
        with pytest.raises((TypeError, ValueError), match=says):
            sim.run(**kw)
    assert "not run yet" in repr(sim)
    sim.run()
    assert "; ran; .run()>" in repr(sim)


@pytest.mark.parametrize("call, error, says", [
    # os.fspath's "expected str, bytes or os.PathLike object, not int" named no argument
    (lambda sc: sc.load_device(5), TypeError, "device: expected a name or a file's path; "
                                              "got int 5"),
    (lambda sc: sc.load_model(5), TypeError, "model: expected a name or a file's path"),
    (lambda sc: sc.model_preset(5), TypeError, "model: expected a preset's name; got int"),
    (lambda sc: sc.load_trace(5), TypeError, "trace: expected a name or a file's path"),
    # accepted before: 'yes' is not a switch, a string is not an expert-load model
    (lambda sc: sc.InstanceConfig(prefix_caching="yes"), ValueError,
     "field 'prefix_caching': expected true or false, got 'yes'"),
    (lambda sc: sc.CostModel("measured", routing="x"), TypeError,
     "routing: expected a RoutingModel"),
])
def test_loaders_and_settings_name_an_argument_of_the_wrong_type(call, error, says):
    import simcluster as sc
    with pytest.raises(error, match=says):
        call(sc)


@pytest.mark.parametrize("name", ["default", "hllm_azure_conv", "llmshare_h100",
                                  "hels_llama2_13b"])
def test_an_instance_keeps_its_state_in_slots(name):
    """Everything an instance holds is in its ``__slots__`` (``Instance``'s comment: past 30
    attributes in ``__dict__`` each ``self.x`` of the event loop became a dictionary lookup):
    after a run of each kind of bundled experiment, GPU replicas, CPU sockets under hLLM's
    controller and NUMA placement, LLMShare's pools and Hels' mixed tensor parallelism, no
    instance has put anything in its ``__dict__``."""
    import dataclasses
    import simcluster.workload as wl
    from simcluster.experiment import load_experiment
    exp = load_experiment(name)
    exp = dataclasses.replace(exp, trace=wl.first_n(exp.trace, min(300, len(exp.trace))))
    sim = exp.simulation()
    sim.run()
    assert sim.cluster.instances
    for inst in sim.cluster.instances:
        assert vars(inst) == {}, (inst.name, sorted(vars(inst)))
    inst.patched = True               # (and a user may still set anything beside them)
    assert vars(inst) == {"patched": True}
