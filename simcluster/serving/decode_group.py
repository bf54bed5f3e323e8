"""The decoding requests of one replica, advanced together by a clock instead of one by one.

In a steady decode step every decoding request of a replica gains one KV token and one output
token, and takes a new KV block when its KV length was a multiple of the block size. A
:class:`DecodeGroup` keeps those requests' counts *relative to a clock*: a member stores
``kv_tokens - clock`` and ``generated - clock`` (:class:`~.request.Request` adds the clock
back when read), so advancing every member by ``j`` steps is ``clock += j``, whatever the
batch size. What the replica needs about the whole batch is kept as aggregates updated when a
request joins or leaves:

* ``n`` and the sum of the members' KV lengths (the decode attention's context sum);
* a histogram of the members' KV lengths modulo the block size, from which the KV blocks that
  ``j`` more steps allocate follow in O(1) (:meth:`new_blocks`), and the most steps that
  fit in the free blocks in O(block size) (:meth:`steps_within`);
* a heap of the clock values at which members finish, so the first completion of a run and
  the requests that complete together come out in admission order.

A member's blocks are exactly ``ceil(kv_tokens / block_size)`` (plus ``ahead`` steps whose
blocks an iteration in flight allocated at its start); a request whose blocks are not tight
cannot join and is stepped one by one by the replica.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from itertools import accumulate
from operator import attrgetter

_ADMIT = attrgetter("admit_seq")


class DecodeGroup:
    """Decoding requests of one replica advanced by a shared clock (see module docstring)."""

    __slots__ = ("bs", "clock", "ahead", "n", "base_sum", "phase", "heap", "members",
                 "_joins")

    def __init__(self, block_size: int):
        self.bs = block_size
        self.clock = 0          # decode steps applied to the group so far
        self.ahead = 0          # steps in flight whose blocks are already allocated
        self.n = 0
        self.base_sum = 0       # sum of the members' stored (clock-relative) KV lengths
        # members by (stored kv - 1) mod block size, the classes twice over (a cyclic range
        # of classes is then one slice)
        self.phase = [0] * (2 * block_size)
        self.heap: list = []    # (finish clock, admit_seq, join id, request), lazily pruned
        self.members: list = []  # in admission order (the replica's running order)
        self._joins = 0

    # -- membership --------------------------------------------------------------------------
    def can_join(self, req) -> bool:
        """``req`` may join: not a member, decoding, output not complete, blocks tight."""
        kv = req._kv
        return (req.group is None and kv >= req.prefill_target and kv > 0
                and req._blocks == -(-kv // self.bs) and req._gen < req.output_tokens)

    def join(self, req):
        """Make ``req`` (running, decoding, tight blocks: :meth:`can_join`) a member."""
        clock = self.clock
        req._kv -= clock
        req._gen -= clock
        req.group = self
        self._joins += 1
        req._join = self._joins
        self.n += 1
        self.base_sum += req._kv
        c = (req._kv - 1) % self.bs
        self.phase[c] += 1
        self.phase[c + self.bs] += 1
        heapq.heappush(self.heap, (req.output_tokens - req._gen, req.admit_seq, self._joins,
                                   req))
        members = self.members
        if not members or members[-1].admit_seq < req.admit_seq:
            members.append(req)
        else:
            insort(members, req, key=_ADMIT)

    def leave(self, req):
        """Materialise ``req``'s counts and take it out of the group."""
        clock = self.clock
        self.n -= 1
        self.base_sum -= req._kv
        c = (req._kv - 1) % self.bs
        self.phase[c] -= 1
        self.phase[c + self.bs] -= 1
        self.members.remove(req)
        req._kv += clock
        req._gen += clock
        req._blocks = -(-(req._kv + self.ahead) // self.bs)
        req.group = None

    # -- aggregates --------------------------------------------------------------------------
    def context_sum(self) -> int:
        """Sum of the members' KV lengths now."""
        return self.base_sum + self.n * self.clock

    def step_blocks(self) -> int:
        """New blocks one more step allocates: members whose KV length is a block multiple."""
        return self.phase[(self.bs - 1 - self.clock) % self.bs]

    def lead_before_shortage(self, free: int) -> int:
        """How many members, in admission order, take their next token before the
        ``free + 1``-th member that starts a new block (all of them if ``free`` blocks do):
        the members that decode one by one before any finds no free block."""
        bs, cls, count = self.bs, (self.bs - 1 - self.clock) % self.bs, 0
        for req in self.members:
            if (req._kv - 1) % bs == cls:       # (its KV length is a block multiple)
                if not free:
                    break
                free -= 1
            count += 1
        return count

    def new_blocks(self, j: int) -> int:
        """New blocks the next ``j`` steps allocate (each member crosses a block boundary
        every ``block_size`` steps, first after ``block_size - q`` steps where ``q + 1`` is
        its KV length modulo the block size)."""
        bs = self.bs
        r = j % bs
        if not r:
            return self.n * (j // bs)
        # members with (stored - 1 + clock) mod bs >= bs - r: a cyclic range of r classes
        lo = (bs - r - self.clock) % bs
        return self.n * (j // bs) + sum(self.phase[lo:lo + r])

    def steps_within(self, free: int, after: int = 0) -> int:
        """The most steps whose new blocks (:meth:`new_blocks`) fit in ``free`` (0 when not
        even one step's do): every ``block_size`` steps take ``n`` blocks; within the last,
        incomplete cycle the members cross a boundary class by class, from the class whose KV
        length is a block multiple now, then the one before it (``phase``'s second copy makes
        that descending cyclic run one slice). ``after``: counted from that many steps on
        (the steps ``j`` with ``new_blocks(after + j) - new_blocks(after)`` within ``free``),
        as the group would count them once those steps are applied."""
        bs = self.bs
        cycles, left = divmod(free, self.n)
        b = (bs - 1 - self.clock - after) % bs
        return cycles * bs + bisect_right(list(accumulate(self.phase[b + bs:b:-1])), left)

    def first_finish(self) -> int:
        """Steps until the first member finishes (a large number if there are none)."""
        heap = self.heap
        while heap:
            fin, _, join, req = heap[0]
            if req.group is self and req._join == join:
                return fin - self.clock
            heapq.heappop(heap)
        return 1 << 62

    def pop_finished(self) -> list:
        """Members whose output is complete at the current clock, in admission order
        (removed from the heap, still members)."""
        heap, clock, out = self.heap, self.clock, []
        while heap and heap[0][0] <= clock:
            _, _, join, req = heapq.heappop(heap)
            if req.group is self and req._join == join:
                out.append(req)
        return out

