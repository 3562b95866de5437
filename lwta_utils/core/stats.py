"""Statistics of accuracies: the Wilson interval of one proportion; the exact McNemar test and
Newcombe's interval of the difference for two models (or attacks) on the same examples."""
from __future__ import annotations

import math

import numpy as np


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (example right under
    A and wrong under B, and the reverse): twice the binomial tail of min(b, c) in b + c draws of a
    fair coin, at most 1."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_difference_interval(a: int, b: int, c: int, d: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval of p_A - p_B for paired proportions (Newcombe 1998, method 10: Wilson intervals
    of both proportions combined with the phi correlation of the pairs). ``a``: right under both,
    ``b``: right under A only, ``c``: right under B only, ``d``: wrong under both."""
    n = a + b + c + d
    if n == 0:
        return (-1.0, 1.0)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    denom = math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    phi = (a * d - b * c) / denom if denom else 0.0
    diff = p1 - p2
    dl = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    du = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return (max(-1.0, diff - dl), min(1.0, diff + du))


def paired_test(right_a, right_b) -> dict:
    """A against B on the same examples, from two boolean arrays (example right under A / B): the
    accuracies, the difference A - B with its 95% interval (Newcombe), the discordant pairs and the
    exact McNemar p-value."""
    right_a, right_b = (np.asarray(v, dtype=bool).ravel() for v in (right_a, right_b))
    if right_a.shape != right_b.shape:
        raise ValueError(f"a paired test needs the same examples ({len(right_a)} vs {len(right_b)})")
    a = int((right_a & right_b).sum())
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    d = int((~right_a & ~right_b).sum())
    n = a + b + c + d
    return {"n": n, "accuracy_a": (a + b) / n, "accuracy_b": (a + c) / n, "difference": (b - c) / n,
            "ci": paired_difference_interval(a, b, c, d), "discordant": (b, c), "p": mcnemar_exact(b, c)}
