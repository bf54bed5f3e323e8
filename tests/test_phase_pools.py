"""Phase pools: links shared by transfers, KV hand-off, the mixed pool, rebalancing, energy."""

from functools import partial

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.cluster import InstanceSpec, PhasePoolCluster
from simcluster.cluster.transfers import LinkNetwork
from simcluster.cost import Layout
from simcluster.cost.analytic import PolynomialCostModel
from simcluster.hardware import LinkSpec
from simcluster.policies import POOL_ROUTERS, REBALANCERS
from simcluster.serving.config import InstanceConfig
from simcluster.simulation import Simulation
from simcluster.simulation.energy import state_seconds

from conftest import make_trace

LINK = LinkSpec("test-link", bw_bytes_per_s=1e9, latency_s=1e-4)


# ------------------------------------------------------------------ the link network
def _run_flows(starts, nbytes, caps=None, bw=1e9, latency=1e-4):
    env = simpy.Environment()
    net = LinkNetwork(env)
    port = net.port("p", bw)
    flows = []

    def start(t, n, cap):
        yield env.timeout(t)
        flows.append(net.transfer(n, [port], latency_s=latency, cap=cap))
    for i, (t, n) in enumerate(zip(starts, nbytes)):
        env.process(start(t, n, (caps or [np.inf] * len(starts))[i]))
    env.run()
    return flows


def test_flows_finishing_together_end_in_the_order_they_started():
    """Flows are kept in the order they started, not in a set of objects hashed by address
    (whose order changed from run to run in one process, and with it the order of same-time
    finishes and of the float subtractions of the fair shares)."""
    env = simpy.Environment()
    net = LinkNetwork(env)
    port = net.port("p", 1e9)
    order = []
    flows = [net.transfer(1e6, [port], latency_s=0.0, k=k) for k in range(50)]
    for f in flows:
        f.done.callbacks.append(lambda ev: order.append(ev.value.meta["k"]))
    assert list(net.flows) == flows and list(port.flows) == flows
    env.run()
    assert order == list(range(50)) and len({f.end_s for f in flows}) == 1


def test_transfer_on_an_idle_link_is_bytes_over_bandwidth_plus_latency():
    (f,) = _run_flows([0.0], [5e8])
    assert f.end_s == pytest.approx(5e8 / 1e9 + 1e-4)
    assert f.done.triggered and f.remaining == 0


def test_a_port_named_twice_is_crossed_once():
    env = simpy.Environment()
    net = LinkNetwork(env)
    port = net.port("p", 1e9)
    f = net.transfer(5e8, [port, port], latency_s=0.0)
    env.run()
    assert f.ports == (port,) and f.end_s == pytest.approx(0.5)


def test_two_transfers_on_one_link_take_twice_as_long():
    a, b = _run_flows([0.0, 0.0], [5e8, 5e8])
    assert a.end_s == pytest.approx(2 * 5e8 / 1e9 + 1e-4)
    assert b.end_s == pytest.approx(a.end_s)


def test_a_late_transfer_shares_what_is_left():
    a, b = _run_flows([0.0, 0.25], [5e8, 5e8], latency=0.0)
    # alone for 0.25 s (2.5e8 bytes), then half rate: 2.5e8 more bytes take 0.5 s
    assert a.end_s == pytest.approx(0.75)
    assert b.end_s == pytest.approx(1.0)          # full rate again for its last 2.5e8


def test_a_capped_flow_leaves_the_rest_to_others():
    slow, fast = _run_flows([0.0, 0.0], [1e8, 9e8], caps=[1e8, np.inf], latency=0.0)
    assert slow.end_s == pytest.approx(1.0)
    assert fast.end_s == pytest.approx(1.0)       # 0.9 GB/s for 1 s


def test_max_min_fair_across_two_ports():
    env = simpy.Environment()
    net = LinkNetwork(env)
    a, b, c = net.port("a", 1e9), net.port("b", 3e9), net.port("c", 3e9)
    f1 = net.transfer(1e9, [a, b])        # bottlenecked at a (shared with f2)
    f2 = net.transfer(1e9, [a, c])
    f3 = net.transfer(2.5e9, [b])         # takes what f1 leaves of b
    env.run()
    assert f1.end_s == pytest.approx(2.0) and f2.end_s == pytest.approx(2.0)
    assert f3.end_s == pytest.approx(2.5e9 / 2.5e9)
    with pytest.raises(ValueError):
        net.port("z", 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=3),
                          st.sampled_from([np.inf, 1e8, 5e8, 2e9, 3e9])),
                min_size=1, max_size=6),
       st.lists(st.sampled_from([1e9, 2e9, 3e9]), min_size=6, max_size=6))
def test_rates_without_shared_ports_are_progressive_fillings(flows, bws):
    """Where no port carries two flows, ``_reallocate`` sets each flow's rate without the
    filling rounds: the floats the rounds (``_fill``) give, bit for bit; where ports are
    shared, it runs the rounds."""
    env = simpy.Environment()
    net = LinkNetwork(env)
    ports = [net.port(k, bw) for k, bw in enumerate(bws)]
    for keys, cap in flows:
        net.transfer(1e9, [ports[k] for k in keys], cap=cap)
    got = [f.rate for f in net.flows]
    net._fill([p for f in net.flows for p in f.ports])
    assert got == [f.rate for f in net.flows]


# ------------------------------------------------------------------ the cluster
def _specs(device, n_prefill=1, n_decode=1, **cfg):
    c = InstanceConfig(**cfg)
    return [InstanceSpec(Layout.uniform(device), c, count=n_prefill, pool="prefill"),
            InstanceSpec(Layout.uniform(device), c, count=n_decode, pool="decode")]


def _sim(trace, device, model, specs=None, prefill_s=0.010, decode_s=0.001, **kw):
    factory = partial(PhasePoolCluster, network_link=LINK, **kw)
    cost = PolynomialCostModel(prefill=(prefill_s, 0, 0), decode=(decode_s, 0, 0))
    return Simulation(trace, model, specs or _specs(device), cost_model=cost,
                      cluster_factory=factory)


def test_handoff_golden(h100, llama7b):
    sim = _sim(make_trace([0.0], [1000], [4]), h100, llama7b)
    res = sim.run()
    r = res.requests.iloc[0]
    nbytes = 1000 * llama7b.kv_bytes_per_token
    ship = nbytes / LINK.bw_bytes_per_s + LINK.latency_s
    assert r.first_token_s == pytest.approx(0.010)
    assert r.handoff_start_s == pytest.approx(0.010)
    assert r.handoff_end_s == pytest.approx(0.010 + ship)
    assert r.handoff_bytes == nbytes and r.instance == 1
    assert r.finish_s == pytest.approx(0.010 + ship + 3 * 0.001)
    t = res.transfers.iloc[0]
    assert (t.src_instance, t.dst_instance, t.bytes) == (0, 1, nbytes)
    assert sim.cluster.kv_capacity_tokens(sim.cluster.instances[0]) > 0


def test_two_handoffs_share_the_link(h100, llama7b):
    """Two prompts prefilled in one iteration ship at once through one port: each takes twice
    as long as alone."""
    sim = _sim(make_trace([0.0, 0.0], [1000, 1000], [4, 4]), h100, llama7b)
    res = sim.run()
    nbytes = 1000 * llama7b.kv_bytes_per_token
    ends = res.requests.handoff_end_s
    assert np.allclose(ends, 0.010 + 2 * nbytes / LINK.bw_bytes_per_s + LINK.latency_s)


def test_layerwise_overlap_hides_all_but_the_last_layer(h100, llama7b):
    sim = _sim(make_trace([0.0], [1000], [4]), h100, llama7b, prefill_s=1.0,
               routing_params={"overlap": True})
    r = sim.run().requests.iloc[0]
    nbytes = 1000 * llama7b.kv_bytes_per_token
    assert r.handoff_start_s == pytest.approx(0.0)
    last_layer = nbytes / llama7b.num_layers / LINK.bw_bytes_per_s
    assert r.handoff_end_s == pytest.approx(1.0 + last_layer + LINK.latency_s, rel=1e-6)
    assert r.handoff_bytes == nbytes


def test_one_token_requests_never_leave_the_prompt_server(h100, llama7b):
    res = _sim(make_trace([0.0, 0.0], [100, 100], [1, 1]), h100, llama7b).run()
    assert res.requests.handoff_bytes.eq(0).all() and res.requests.instance.eq(0).all()
    assert not len(res.transfers)


def test_overloaded_prompt_pool_borrows_a_token_server(h100, llama7b):
    trace = make_trace(np.zeros(6), [2000] * 6, [3] * 6)
    sim = _sim(trace, h100, llama7b, specs=_specs(h100, 1, 2),
               routing_params={"prompt_max_pending_tokens": 2500}, prefill_s=0.05)
    res = sim.run()
    moves = sim.cluster.moves_frame()
    assert "borrow" in set(moves.event) and "return" in set(moves.event)
    assert res.requests.finish_s.notna().all()
    prefilled_on = set(res.timeline[res.timeline.prefill_seqs > 0].instance)
    assert len(prefilled_on) > 1                       # a token server ran prompts
    assert sim.cluster.role_counts() == {"prefill": 1, "decode": 2, "mixed": 0,
                                         "switching": 0}


def test_without_mixed_pool_prompts_queue_in_their_pool(h100, llama7b):
    trace = make_trace(np.zeros(6), [2000] * 6, [3] * 6)
    sim = _sim(trace, h100, llama7b, specs=_specs(h100, 1, 2),
               routing_params={"prompt_max_pending_tokens": 2500, "mixed": False})
    res = sim.run()
    assert set(res.timeline[res.timeline.prefill_seqs > 0].instance) == {0}
    assert not len(sim.cluster.moves)


def _bursty(n=120, seed=1):
    rng = np.random.default_rng(seed)
    arrivals = np.sort(np.concatenate([rng.uniform(0, 2, n // 2), rng.uniform(6, 8, n // 2)]))
    return make_trace(arrivals, rng.integers(200, 3000, n), rng.integers(2, 300, n))


def test_rebalancer_conserves_servers_and_moves_them(h100, llama7b):
    counts = []

    class Watch(REBALANCERS["threshold"]):
        def decide(self, now):
            c = self.cluster
            counts.append(sum(c.role_counts().values()))
            for role in ("prefill", "decode", "mixed", "switching"):   # (kept across moves)
                assert c.pool_servers(role) == [s for s in c.instances if c.role[s.id] == role]
            return super().decide(now)
    REBALANCERS["_watch_threshold"] = Watch
    try:
        sim = _sim(_bursty(), h100, llama7b, specs=_specs(h100, 1, 3, max_num_seqs=8),
                   rebalancer="_watch_threshold",
                   rebalancer_params={"interval_s": 0.2, "cooldown_s": 0.5, "prefill_high": 0.5,
                                      "decode_low": 0.9},
                   routing_params={"mixed": False}, reload_s=0.3, prefill_s=0.08)
        res = sim.run()
    finally:
        del REBALANCERS["_watch_threshold"]
    assert counts and set(counts) == {4}
    moves = sim.cluster.moves_frame()
    drains, ready = moves[moves.event == "drain"], moves[moves.event == "ready"]
    assert len(ready) >= 1 and len(ready) == len(drains)
    for (_, d), (_, r) in zip(drains.iterrows(), ready.iterrows()):
        assert r.time_s >= d.time_s + 0.3 and r.server == d.server
    assert sum(sim.cluster.role_counts().values()) == 4
    assert res.requests.finish_s.notna().all()


@pytest.mark.parametrize("routing", sorted(POOL_ROUTERS))
@pytest.mark.parametrize("rebalancer", [None] + sorted(REBALANCERS))
def test_every_pool_policy_serves_the_trace(routing, rebalancer, h100, llama7b):
    params = {"interval_s": 0.3, "cooldown_s": 0.3} if rebalancer == "threshold" else {}
    run = [_sim(_bursty(60, seed), h100, llama7b, specs=_specs(h100, 2, 2, max_num_seqs=16),
                routing=routing, rebalancer=rebalancer, rebalancer_params=params,
                reload_s=0.1, prefill_s=0.03).run() for seed in (3, 3)]
    res = run[0]
    r = res.requests
    assert not r.rejected.any() and r.finish_s.notna().all()
    assert (r.finish_s >= r.arrival_s).all()
    moved = r.handoff_bytes > 0
    assert (r.handoff_end_s[moved] >= r.handoff_start_s[moved]).all()
    assert (r.handoff_start_s[moved] <= r.first_token_s[moved] + 1e-12).all()
    tl = res.timeline
    assert (tl.decode_seqs * tl.iterations).sum() + tl.prefill_done.sum() == r.output_tokens.sum()
    assert run[0].requests.equals(run[1].requests)


def test_bad_pool_configurations(h100, llama7b):
    with pytest.raises(ValueError, match="pool = 'prefill'"):
        _sim(make_trace([0.0], [10], [2]), h100, llama7b,
             specs=[InstanceSpec(Layout.uniform(h100), pool="prefill")])
    with pytest.raises(ValueError, match="reload_s"):
        _sim(make_trace([0.0], [10], [2]), h100, llama7b, reload_s=-1)
    with pytest.raises(KeyError, match="splitwise"):
        _sim(make_trace([0.0], [10], [2]), h100, llama7b, routing="nope")
    sim = _sim(make_trace([0.0], [10], [2]), h100, llama7b)
    with pytest.raises(ValueError, match="move to"):
        sim.cluster.move(sim.cluster.instances[0], "mixed")


def test_an_unservable_request_is_rejected_with_a_reason(h100, llama7b):
    res = _sim(make_trace([0.0, 0.0], [10, 5000], [2, 2]), h100, llama7b,
               specs=_specs(h100, max_model_len=4096)).run()
    bad = res.requests.set_index("request_id").loc[1]
    assert bad.rejected and "max_model_len" in bad.reason


def test_energy_is_power_times_time_per_state(h100, llama7b):
    sim = _sim(make_trace([0.0, 1.0], [1000, 1000], [11, 11]), h100, llama7b)
    res = sim.run()
    s = res.summary()
    span = s["span_s"]
    secs = state_seconds(res.timeline, res.instances.instance, span)
    # prompt server: two prefills of 10 ms; token server: 2 x 10 decode steps of 1 ms
    assert secs.loc[0, "prefill_s"] == pytest.approx(0.020)
    assert secs.loc[1, "decode_s"] == pytest.approx(0.020)
    joules = sum(secs.loc[i, "idle_s"] * 75 + secs.loc[i, "prefill_s"] * 700
                 + secs.loc[i, "decode_s"] * 380 for i in (0, 1))
    assert s["energy_kwh"] == pytest.approx(joules / 3.6e6)
    assert s["energy_per_request_j"] == pytest.approx(joules / 2)
    assert s["energy_per_m_tokens_kwh"] == pytest.approx(joules / 3.6e6 / 2022 * 1e6)
    assert list(res.instances.power_prefill_w) == [700, 700]


# ------------------------------------------------------------------ policy decisions alone
class _Server:
    def __init__(self, sid, waiting=0):
        self.id, self.waiting, self.running = sid, [object()] * waiting, []
        self.config = type("C", (), {"max_batched_tokens": 100})()


class _View:
    """A phase-pool cluster's view, as policies read it."""

    def __init__(self, roles, pending=None, reserved=None, cap=1000, waiting=None):
        self.all = [_Server(i, (waiting or {}).get(i, 0)) for i in range(len(roles))]
        self.roles, self.switching = dict(enumerate(roles)), []
        self.pending, self.reserved, self.cap = pending or {}, reserved or {}, cap

    def servers(self, role, req):
        return [s for s in self.all if self.roles[s.id] == role]

    pool_servers = lambda self, role: self.servers(role, None)  # noqa: E731

    def pending_prompt_tokens(self, s):
        return self.pending.get(s.id, 0)

    def reserved_kv_tokens(self, s):
        return self.reserved.get(s.id, 0)

    def kv_capacity_tokens(self, s):
        return self.cap

    def borrow(self, s):
        self.roles[s.id] = "mixed"


class _Req:
    prompt_tokens, max_kv_tokens = 100, 300


def test_splitwise_borrows_a_prompt_server_when_token_servers_are_full():
    view = _View(["prefill", "prefill", "decode"], reserved={2: 900}, pending={1: 50})
    p, t = POOL_ROUTERS.create("splitwise").bind(view).assign(_Req(), 0.0)
    assert p.id == 0 and t.id == 1 and view.roles[1] == "mixed"


def test_splitwise_runs_both_phases_on_one_server_when_no_pair_exists():
    view = _View(["prefill", "decode"], reserved={1: 900}, pending={0: 10_000},
                 waiting={0: 1})
    p, t = POOL_ROUTERS.create("splitwise", mixed=False).bind(view).assign(_Req(), 0.0)
    assert (p.id, t.id) == (0, 1)                     # without borrowing: queue in the pools
    view = _View(["switching", "decode"], reserved={1: 900})
    p, t = POOL_ROUTERS.create("splitwise").bind(view).assign(_Req(), 0.0)
    assert p is t and p.id == 1
    assert POOL_ROUTERS.create("splitwise").bind(_View(["switching"])).assign(_Req(), 0) == \
        (None, None)


def test_kv_jsq_falls_back_to_one_pool():
    view = _View(["prefill", "switching"], waiting={0: 2})
    p, t = POOL_ROUTERS.create("kv_jsq").bind(view).assign(_Req(), 0.0)
    assert p is t and p.id == 0
    assert POOL_ROUTERS.create("kv_jsq").bind(_View(["switching"])).assign(_Req(), 0) == \
        (None, None)


def test_threshold_rebalancer_moves_toward_the_decode_pool_under_kv_pressure():
    view = _View(["prefill", "prefill", "decode"], reserved={2: 950}, pending={1: 10})
    policy = REBALANCERS.create("threshold", cooldown_s=10).bind(view)
    (server, to), = policy.decide(0.0)
    assert (server.id, to) == (0, "decode")
    assert policy.decide(5.0) == []                  # cooldown
    view.switching = [server]
    assert policy.decide(20.0) == []                 # one move at a time


@pytest.mark.parametrize("name, params", [
    ("splitwise", {"prompt_max_pending_tokens": 0}),
    ("threshold", {"interval_s": 0}), ("threshold", {"cooldown_s": -1}),
    ("threshold", {"decode_low": 0.95}), ("threshold", {"min_servers": 0})])
def test_pool_policy_parameters_are_checked(name, params):
    registry = POOL_ROUTERS if name in POOL_ROUTERS else REBALANCERS
    with pytest.raises((ValueError, TypeError)):
        registry.create(name, **params)


@pytest.mark.parametrize("routing_params", [{}, {"overlap": True}])
def test_handoffs_on_callbacks_give_what_processes_gave(h100, llama7b, monkeypatch,
                                                        routing_params):
    """A hand-off's arrival runs as a callback of its flow's end, and a flow's end runs its
    waiters at once where nothing else is due then: the frames are those of a process per
    hand-off waiting on the flow and of the flow's end as an event of its own, bit for bit
    (several servers and shared ports, layer-by-layer shipping or not)."""
    import simcluster.cluster.transfers as transfers
    from simcluster.cost import CostModel
    rng = np.random.default_rng(3)
    n = 300
    trace = make_trace(np.cumsum(rng.exponential(1 / 12, n)), rng.integers(50, 3000, n),
                       rng.integers(2, 200, n))

    def go():
        factory = partial(PhasePoolCluster, network_link=LINK, routing_params=routing_params)
        sim = Simulation(trace, llama7b, _specs(h100, 3, 3), cost_model=CostModel(),
                         cluster_factory=factory)
        return sim.run(), sim
    now, sim = go()
    assert len(now.transfers) > 150 and sim.cluster.network._generation > 300
    inlined = []
    real = transfers.succeed_last
    monkeypatch.setattr(transfers, "succeed_last", lambda env, ev, v: inlined.append(
        not env._queue or env._queue[0][0] > env._now) or real(env, ev, v))
    go()
    assert sum(inlined) > 100                   # (the shortcut was taken)

    def prefilled(self, req):                   # a process per hand-off, as before
        source = self.instances[req.instance]
        flow = self._flow_of(req, source)

        def arrive():
            yield flow.done
            self._arrive(req, source, flow)
        self.env.process(arrive())

    def fire(self, flow):                       # the flow's end an event of its own
        flow.end_s = self.env.now
        flow.done.succeed(flow)
    monkeypatch.setattr(PhasePoolCluster, "prefilled", prefilled)
    monkeypatch.setattr(transfers.LinkNetwork, "_fire", fire)
    before, _ = go()
    assert now.requests.equals(before.requests) and now.timeline.equals(before.timeline)
    assert now.transfers.equals(before.transfers)
