"""The decode group: members advanced by a clock, their counts and blocks exact."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.serving.decode_group import DecodeGroup
from simcluster.serving.request import Request


def _member(rid, kv, gen, out, bs, seq):
    req = Request(rid, 0.0, kv, out)
    req._kv, req._gen, req._blocks = kv, gen, -(-kv // bs)
    req.admit_seq = seq
    return req


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 4, 16, 256]),
       st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 50), st.integers(1, 400)),
                min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=12))
def test_group_counts_blocks_and_finishes_match_stepping_one_by_one(bs, reqs, moves):
    """Advance the group by clock moves (with members leaving) and compare every count,
    every block count and the finishing order with plain per-request arithmetic."""
    g = DecodeGroup(bs)
    model = {}
    for rid, (kv, gen, extra) in enumerate(reqs):
        out = gen + extra
        req = _member(rid, kv, gen, out, bs, rid)
        g.join(req)
        model[rid] = [req, kv, gen, out]
    for j, drop in moves:
        live = [m for m in model.values() if m[0].group is g]
        if not live:
            break
        j = min(j, g.first_finish())
        expect = sum(-(-(kv + j) // bs) - -(-kv // bs) for _, kv, _, _ in live)
        assert g.new_blocks(j) == expect
        assert g.step_blocks() == sum(1 for _, kv, _, _ in live if kv % bs == 0)
        g.clock += j
        for m in live:
            m[1] += j
            m[2] += j
        done = g.pop_finished()
        assert done == sorted((m[0] for m in live if m[2] >= m[3]), key=lambda r: r.admit_seq)
        for req in done:
            g.leave(req)
        if drop and len(live) > len(done):
            victim = next(m[0] for m in live if m[0].group is g)
            g.leave(victim)
        for rid, (req, kv, gen, out) in model.items():
            assert (req.kv_tokens, req.generated) == (kv, gen)
            assert req.blocks == math.ceil(kv / bs)
        assert g.context_sum() == sum(m[1] for m in model.values() if m[0].group is g)
        assert g.members == sorted((m[0] for m in model.values() if m[0].group is g),
                                   key=lambda r: r.admit_seq)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from([1, 2, 4, 16]), st.lists(st.integers(1, 300), min_size=1, max_size=25),
       st.integers(0, 40), st.integers(0, 120))
def test_steps_within_is_the_most_steps_whose_blocks_fit(bs, kvs, clock, free):
    """steps_within(free) is the largest j whose new_blocks(j) fit in ``free`` (0 when not even
    one step's do), as a search over every j finds it; steps_within(free, after) the same of
    the steps after the next ``after``."""
    g = DecodeGroup(bs)
    g.clock = clock
    for rid, kv in enumerate(kvs):
        g.join(_member(rid, kv, 1, 10_000, bs, rid))
    j = 0
    while g.new_blocks(j + 1) <= free:
        j += 1
    assert g.steps_within(free) == j
    for after in (1, 5, bs + 3):      # (counted from steps not applied yet)
        j = 0
        while g.new_blocks(after + j + 1) - g.new_blocks(after) <= free:
            j += 1
        assert g.steps_within(free, after) == j


def test_a_member_cannot_be_edited_behind_the_group():
    g = DecodeGroup(16)
    req = _member(0, 100, 1, 10, 16, 0)
    g.join(req)
    for field in ("kv_tokens", "generated", "blocks"):
        try:
            setattr(req, field, 5)
        except AttributeError:
            continue
        raise AssertionError(f"{field} was set on a member")
    g.clock += 3
    g.leave(req)
    assert (req.kv_tokens, req.generated, req.blocks) == (103, 4, 7)
    req.kv_tokens = 5
    assert req.kv_tokens == 5


def test_only_tight_decoding_requests_may_join():
    g = DecodeGroup(16)
    ok = _member(0, 100, 1, 10, 16, 0)
    assert g.can_join(ok)
    loose = _member(1, 100, 1, 10, 16, 1)
    loose._blocks += 1                     # holds a block more than its KV needs
    prefilling = _member(2, 100, 0, 10, 16, 2)
    prefilling.prefill_target = 200
    done = _member(3, 100, 10, 10, 16, 3)
    assert not any(g.can_join(r) for r in (loose, prefilling, done))
