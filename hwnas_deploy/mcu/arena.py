"""Static arena plans: where each activation tensor of a blob lives in the board's SRAM.

TFLite Micro's GreedyMemoryPlanner places tensors largest first, each at the lowest offset where
it overlaps no placed tensor alive at the same time. That order can leave holes no later tensor
fills: on MobileNetV1-0.25 it needs 63.0 KiB where the largest set of tensors alive at once (a
lower bound for any plan of the same operator order) is 54.0 KiB. `plan_arena` places the
tensors in several orders, each first-fit and best-fit, then in seeded random orders until one
reaches that bound or the tries run out, and keeps the smallest arena (on mcu-mbnet networks the
orders by rule stopped 3-8 % above the bound where a few hundred random ones reached it, in 0.1 s);
TFLite Micro's plan is one of the candidates, so no plan is larger than the one it would make.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from itertools import chain

ALIGN = 16  # bytes: every tensor starts on a 16-byte boundary

Lifetime = tuple[int, int]  # first and last operator index (inclusive) that touches the tensor


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lower_bound(sizes: Sequence[int], lifetimes: Sequence[Lifetime]) -> int:
    """The largest sum of (aligned) sizes of tensors alive at one operator: no plan is smaller."""
    steps = {s for lt in lifetimes for s in lt}
    return max((sum(align(n) for n, (a, b) in zip(sizes, lifetimes, strict=True) if a <= s <= b) for s in steps),
               default=0)


def greedy_by_size(sizes: Sequence[int], lifetimes: Sequence[Lifetime]) -> tuple[list[int], int]:
    """TFLite Micro's GreedyMemoryPlanner: largest first, each at the lowest offset that fits."""
    return _place(sizes, lifetimes, sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)), best_fit=False)


#: the orders plan_arena tries (ties: index), beside greedy by size
_ORDERS: dict[str, Callable[[Sequence[int], Sequence[Lifetime], int], tuple]] = {
    "size": lambda s, lt, i: (-s[i], i),
    "first use": lambda s, lt, i: (lt[i][0], -s[i], i),
    "last use": lambda s, lt, i: (-lt[i][1], -s[i], i),
    "size x lifetime": lambda s, lt, i: (-s[i] * (lt[i][1] - lt[i][0] + 1), i),
    "lifetime": lambda s, lt, i: (-(lt[i][1] - lt[i][0]), -s[i], i),
}


#: placements of random orders plan_arena may try: each costs ~n^2 steps for n tensors
RANDOM_WORK = 2_000_000
RANDOM_TRIES = 300


def plan_arena(sizes: Sequence[int], lifetimes: Sequence[Lifetime]) -> tuple[list[int], int]:
    """Offsets (each ALIGN-ed) and the arena size (ALIGN-ed) of the smallest plan found; never
    larger than greedy_by_size's, never smaller than lower_bound. Deterministic: the random
    orders come from a fixed seed, so one graph always gets one plan (blobs are named by content)."""
    best = greedy_by_size(sizes, lifetimes)
    floor = align(lower_bound(sizes, lifetimes))
    by_rule = (sorted(range(len(sizes)), key=lambda i: key(sizes, lifetimes, i)) for key in _ORDERS.values())
    tries = min(RANDOM_TRIES, RANDOM_WORK // max(1, len(sizes)) ** 2)
    for order in chain(by_rule, _random_orders(len(sizes), tries)):
        if best[1] <= floor:
            break
        for best_fit in (False, True):
            plan = _place(sizes, lifetimes, order, best_fit)
            if plan[1] < best[1]:
                best = plan
    return best


def _random_orders(n: int, tries: int) -> Iterator[list[int]]:
    rng, order = random.Random(0), list(range(n))
    for _ in range(tries):
        rng.shuffle(order)
        yield order


def _place(sizes: Sequence[int], lifetimes: Sequence[Lifetime], order: Sequence[int],
           best_fit: bool) -> tuple[list[int], int]:
    """Place tensors in `order`: each in the lowest gap among placed tensors alive with it that
    holds it (first fit) or in the smallest such gap (best fit), else above them all."""
    offsets = [0] * len(sizes)
    placed: list[int] = []
    for i in order:
        first, last = lifetimes[i]
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in placed
                      if not (lifetimes[j][1] < first or last < lifetimes[j][0]))
        chosen, chosen_gap, cursor = None, None, 0
        for start, end in busy:
            gap = start - cursor
            if gap >= sizes[i] and (chosen is None or (best_fit and gap < chosen_gap)):
                chosen, chosen_gap = cursor, gap
                if not best_fit:
                    break
            cursor = max(cursor, align(end))
        offsets[i] = cursor if chosen is None else chosen
        placed.append(i)
    arena = max((offsets[i] + sizes[i] for i in range(len(sizes))), default=0)
    return offsets, align(arena)


def shared(sizes: Sequence[int], lifetimes: Sequence[Lifetime],
           pairs: Sequence[tuple[int, int]]) -> tuple[list[int], list[Lifetime]]:
    """The tensors and lifetimes a plan sees when each pair (a, b) shares one buffer (an operator
    writing its output over its input, in place): b joins a's buffer, sized for the larger and
    alive over both lifetimes; b's own entry becomes empty."""
    sizes, lives = list(sizes), [tuple(lt) for lt in lifetimes]
    home = list(range(len(sizes)))
    for a, b in pairs:
        ra = home[a]
        sizes[ra] = max(sizes[ra], sizes[b])
        lives[ra] = (min(lives[ra][0], lives[b][0]), max(lives[ra][1], lives[b][1]))
        sizes[b], lives[b], home[b] = 0, lives[ra], ra
    return sizes, lives
