"""hLLM's mini-batch dispatcher: the pipeline of copies and decodes, spill routing (issue 10
defect 4) and router speeds after NUMA placement (defect 5)."""

from functools import partial

import numpy as np
import pytest

from simcluster.cluster import InstanceSpec
from simcluster.cluster.pools import DisaggregatedCluster
from simcluster.cost import CostModel, Layout
from simcluster.hardware import load_device, load_link
from simcluster.serving.config import InstanceConfig
from simcluster.simulation import Simulation

from conftest import make_trace, ship_with_a_resource

EMPTY = np.zeros(0, dtype=np.int64)


@pytest.fixture(scope="module")
def a100():
    return load_device("A100-80GB-PCIe")


@pytest.fixture(scope="module")
def xeon():
    return load_device("Xeon-Gold-6148")


def _sim(trace, model, gpu, sock, sockets, *, seqs=16, cost=None, gpu_seqs=256, **kw):
    specs = [InstanceSpec(Layout.uniform(gpu), InstanceConfig(max_num_seqs=gpu_seqs,
                                                          max_batched_tokens=131072),
                          pool="prefill"),
             InstanceSpec(Layout.uniform(sock), InstanceConfig(max_num_seqs=seqs),
                          count=sockets, pool="decode")]
    factory = partial(DisaggregatedCluster, kv_link=load_link("PCIe3"), **kw)
    return Simulation(trace, model, specs, cost_model=cost or CostModel(),
                      cluster_factory=factory)


def _count_full_submits(sim):
    """Wrap the decode instances' submit: how many hand-offs found their socket full."""
    seen = [0, 0]
    for inst in sim.cluster.decode_pool:
        def submit(req, inst=inst, orig=inst.submit):
            seen[0] += 1
            seen[1] += len(inst.running) + len(inst.waiting) >= inst.config.max_num_seqs
            orig(req)
        inst.submit = submit
    return seen


# -- defect 4: spill routing never sends a hand-off to a full socket ---------------------------

@pytest.mark.parametrize("mini_batch", [1, 4])
def test_spill_sends_no_handoff_to_a_full_socket(llama7b, a100, xeon, mini_batch):
    rng = np.random.default_rng(2)
    n = 120
    trace = make_trace(np.sort(rng.uniform(0, 20, n)), rng.integers(100, 800, n),
                       rng.integers(10, 60, n))
    sim = _sim(trace, llama7b, a100, xeon, 2, seqs=6, offload="pool_room",
               decode_router="numa_minibatch", decode_router_params={"mini_batch": mini_batch})
    seen = _count_full_submits(sim)
    req = sim.run().requests
    assert seen[0] > 12 and seen[1] == 0                  # some offloaded, none to a full socket
    on_gpu = req.instance == 0
    assert on_gpu.sum() > 0 and (~on_gpu).sum() == seen[0]  # the rest decoded on the GPU
    assert req.finish_s.notna().all()


# -- defect 5: a decode pool's router speeds come from a decode batch, NUMA placement applied --

def test_decode_pool_speeds_see_the_numa_placement(llama7b, a100, xeon):
    n = 200
    rng = np.random.default_rng(4)
    trace = make_trace(np.sort(rng.uniform(0, 20, n)), rng.integers(100, 1000, n),
                       rng.integers(50, 300, n))
    sim = _sim(trace, llama7b, a100, xeon, 4, seqs=32, numa="oblivious",
               decode_router="least_outstanding_tokens")
    pool = sim.cluster.decode_pool
    steps = [inst.timer.time(EMPTY, EMPTY, 32, 32 * 1025, 32) for inst in pool]
    assert steps[1] > 1.5 * steps[0]                    # socket 1 of each host reads remotely
    for inst, t in zip(pool, steps):
        assert inst.speed == pytest.approx(min(steps) / t)
    req = sim.run().requests
    per = req.instance.value_counts()
    local, remote = per[pool[0].id] + per[pool[2].id], per[pool[1].id] + per[pool[3].id]
    assert local > 1.3 * remote


# -- the pipeline ----------------------------------------------------------------------------------

def _batch_trace(n=32, prompt=3000, out=64):
    return make_trace(np.zeros(n), np.full(n, prompt), np.full(n, out))


def _copy_wait(sim, req):
    """Per request: KV arrival on its socket minus its first token (the hand-off's wait)."""
    ends = {rid: end for rid, _, _, end, _ in sim.cluster.transfers}
    return req.request_id.map(ends) - req.first_token_s


@pytest.mark.parametrize("mini_batch", [1, 4, None])
def test_minibatch_copies_pipeline_with_decode(llama7b, a100, xeon, mini_batch):
    """A batch of 32 prefilled together: each mini-batch is one copy into one socket, and the
    first mini-batch decodes while the next ones copy."""
    sim = _sim(_batch_trace(), llama7b, a100, xeon, 4, seqs=32,
               decode_router="numa_minibatch", decode_router_params={"mini_batch": mini_batch})
    req = sim.run().requests
    disp = sim.cluster.decode_router
    size = mini_batch or 32
    assert disp.batches.requests.tolist() == [32]
    assert disp.batches.mini_batches.tolist() == [32 // size]
    arrivals = sorted({end for _, _, _, end, _ in sim.cluster.transfers})
    assert len(arrivals) == 32 // size                  # one copy per mini-batch
    wait = _copy_wait(sim, req)
    one_copy = arrivals[0] - req.first_token_s.min()
    assert wait.min() == pytest.approx(one_copy)
    # the first mini-batch's decode starts before the last copy ends (unless one copy)
    first_socket = sim.cluster.decode_pool[0]
    decode_start = min(r[1] for inst in sim.cluster.decode_pool for r in inst.timeline)
    assert decode_start == pytest.approx(arrivals[0])
    assert (decode_start < arrivals[-1]) == (size < 32)
    assert first_socket.timeline


def test_smaller_minibatches_shorten_the_handoff_wait(llama7b, a100, xeon):
    waits = {}
    for mb in (1, 8, None):
        sim = _sim(_batch_trace(), llama7b, a100, xeon, 4, seqs=32,
                   decode_router="numa_minibatch", decode_router_params={"mini_batch": mb})
        waits[mb] = _copy_wait(sim, sim.run().requests).mean()
    assert waits[1] < waits[8] < waits[None]
    # without mini-batches every request waits for the whole batch's copy
    sim = _sim(_batch_trace(), llama7b, a100, xeon, 4, seqs=32,
               decode_router="numa_minibatch", decode_router_params={"mini_batch": None})
    req = sim.run().requests
    spans = {(s, e) for _, _, s, e, _ in sim.cluster.transfers}
    assert len(spans) == 1                              # one copy of the whole batch
    (start, end), = spans
    nbytes = sum(b for *_, b in sim.cluster.transfers)
    assert end - start == pytest.approx(CostModel().calibration.link_time(
        load_link("PCIe3"), "transfer", nbytes))
    assert _copy_wait(sim, req).min() == pytest.approx(end - req.first_token_s.min())


def test_synchronous_copy_holds_the_gpu(llama7b, a100, xeon):
    """overlap = false: the GPU starts nothing until its batch's copies have ended."""
    rng = np.random.default_rng(6)
    n = 60
    trace = make_trace(np.sort(rng.uniform(0, 2, n)), rng.integers(1000, 3000, n),
                       np.full(n, 30))
    runs = {}
    for overlap in (True, False):
        sim = _sim(trace, llama7b, a100, xeon, 4, seqs=32, gpu_seqs=8,
                   decode_router="numa_minibatch",
                   decode_router_params={"mini_batch": 2, "overlap": overlap})
        runs[overlap] = (sim, sim.run().requests)
    sim, req = runs[False]
    gpu = sim.cluster.prefill_pool[0].timeline
    copies = sim.cluster.transfers
    for (_, start, end, *_), (_, nxt, *_) in zip(gpu, gpu[1:]):
        shipped = [e for _, _, s, e, _ in copies if s >= end - 1e-12 and s <= nxt]
        assert all(e <= nxt + 1e-12 for e in shipped)   # next iteration after its copies
    assert runs[False][1].ttft_s.mean() > runs[True][1].ttft_s.mean()
    assert req.finish_s.notna().all()


def test_hold_queues_whole_minibatches(llama7b, a100, xeon):
    """hold = true: a mini-batch waits (its KV on the GPU) until one socket can take it all."""
    trace = make_trace(np.repeat([0.0, 0.0, 0.0], 8), np.full(24, 200), np.full(24, 40))
    sim = _sim(trace, llama7b, a100, xeon, 2, seqs=8, decode_router="numa_minibatch",
               decode_router_params={"mini_batch": 8, "hold": True})
    seen = _count_full_submits(sim)
    req = sim.run().requests
    assert seen == [24, 0]
    per = req.groupby("instance").size()
    assert sorted(per.tolist()) == [8, 16]
    starts = sorted({r[1] for inst in sim.cluster.decode_pool for r in inst.timeline
                     if r[7] == 8 and r[1] == r[1]})
    assert len(starts) >= 2


@pytest.mark.parametrize("kw,match", [({"mini_batch": 0}, "mini_batch"),
                                      ({"mini_batch": True}, "mini_batch"),
                                      ({"slots": 0}, "slots")])
def test_dispatcher_parameters(kw, match):
    from simcluster.policies import ROUTERS
    with pytest.raises(ValueError, match=match):
        ROUTERS.create("numa_minibatch", **kw)


@pytest.mark.parametrize("kw,match", [({"decode_sockets": [2]}, "decode_sockets"),
                                      ({"decode_sockets": [0, 0]}, "decode_sockets"),
                                      ({"remote_penalty": 0.5}, "remote_penalty"),
                                      ({"kv_tokens": 0}, "kv_tokens"),
                                      ({"home_socket": 3}, "home_socket")])
def test_placement_parameters(kw, match):
    from simcluster.policies import NUMA_PLACEMENTS
    with pytest.raises(ValueError, match=match):
        NUMA_PLACEMENTS.create("aware", **kw)


def test_controller_units_parameter():
    from simcluster.policies import CONTROLLERS
    with pytest.raises(ValueError, match="units"):
        CONTROLLERS.create("mmc", units="tokens")


# -- the dispatcher on callbacks gives what it gave as processes --------------------------------

def _process_dispatcher(monkeypatch):
    """MiniBatchDispatcher as it ran before: a process per prefill batch and one per
    mini-batch copy, waiting on the link resource (its choice of sockets, ``_dispatch``, is
    the dispatcher's own; its copies are these)."""
    import simpy
    from simcluster.policies.minibatch import MiniBatchDispatcher as D

    def handoff(self, req, source):
        pending = self._pending.setdefault(source.id, [])
        pending.append(req)
        if len(pending) == 1:
            if not self.overlap and source.gate is None:
                source.gate = self.env.event()
            self.env.process(batch(self, source))

    def batch(self, source):
        done = self._dispatch_pending(source)
        if not self.overlap:
            yield simpy.AllOf(self.env, done)
            if source.gate is not None and not source.gate.triggered:
                source.gate.succeed()

    def send(self, group, source, inst, done=None):
        if inst is not None:
            self.current = inst
            self._reserved[inst.id][0] += len(group)
            self._reserved[inst.id][1] += sum(r.remaining_output for r in group)
        return self.env.process(ship(self, group, source, inst, done))

    def ship(self, group, source, inst, done):
        yield from ship_with_a_resource(self.cluster, group, source)
        if inst is not None:
            self._reserved[inst.id][0] -= len(group)
            self._reserved[inst.id][1] -= sum(r.remaining_output for r in group)
        self.cluster.deliver(group, inst)
        if done is not None:
            done.succeed()

    monkeypatch.setattr(D, "handoff", handoff)
    monkeypatch.setattr(D, "_send", send)


@pytest.mark.parametrize("params", [{"mini_batch": 4}, {"mini_batch": None},
                                    {"mini_batch": 2, "overlap": False},
                                    {"mini_batch": 3, "hold": True, "slots": 5},
                                    {"mini_batch": 2, "hold": True, "overlap": False,
                                     "slots": 4}])
def test_dispatch_on_callbacks_gives_what_processes_gave(llama7b, a100, xeon, monkeypatch,
                                                         params):
    """The dispatcher's batches and copies run on callbacks (the dispatch where the batch's
    process took its first step, each copy in the cluster's link queue): the frames are those
    of the processes and link resource it used before, bit for bit — pipelined, whole
    batches, synchronous copies that hold the GPU, batches held for a socket's room."""
    rng = np.random.default_rng(5)
    n = 160
    trace = make_trace(np.sort(rng.uniform(0, 30, n)), rng.integers(100, 1500, n),
                       rng.integers(5, 80, n))

    def go():
        sim = _sim(trace, llama7b, a100, xeon, 3, seqs=8, gpu_seqs=12,
                   decode_router="numa_minibatch", decode_router_params=params)
        res = sim.run()
        return res, sim.cluster.decode_router.batches
    now, batches = go()
    assert len(batches) > 20 and (batches.requests > 1).any()
    _process_dispatcher(monkeypatch)
    before, batches_before = go()
    assert now.requests.equals(before.requests) and now.timeline.equals(before.timeline)
    assert batches.equals(batches_before)


def test_candidates_of_sockets_of_two_admission_profiles(llama7b, a100, xeon):
    """Sockets of two admission profiles (a shorter max_model_len on some): the dispatcher
    asks one socket of each and keeps those whose profile admits every request of the
    mini-batch — the sockets that can_serve each, active ones first."""
    from simcluster.serving import Request
    specs = [InstanceSpec(Layout.uniform(a100), InstanceConfig(max_num_seqs=64), pool="prefill"),
             InstanceSpec(Layout.uniform(xeon), InstanceConfig(max_num_seqs=8), count=2,
                          pool="decode"),
             InstanceSpec(Layout.uniform(xeon), InstanceConfig(max_num_seqs=8, max_model_len=512),
                          count=2, pool="decode")]
    trace = make_trace(np.zeros(1), [100], [10])
    sim = Simulation(trace, llama7b, specs, cost_model=CostModel(),
                     cluster_factory=partial(DisaggregatedCluster, kv_link=load_link("PCIe3"),
                                             decode_router="numa_minibatch"))
    disp, pool = sim.cluster.decode_router, sim.cluster.decode_pool
    assert len(disp._heads) == 2
    short, long_ = Request(0, 0.0, 100, 10), Request(1, 0.0, 1000, 10)

    def naive(reqs):
        able = [i for i in pool if all(not i.can_serve(r) for r in reqs)]
        return [i for i in able if i.active] or able
    for reqs in ([short], [long_], [short, long_]):
        assert disp._candidates(reqs) == naive(reqs)
    assert len(disp._candidates([short])) == 4 and len(disp._candidates([long_])) == 2
    pool[0].active = False
    assert disp._candidates([long_]) == naive([long_]) == [pool[1]]
