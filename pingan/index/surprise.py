"""How surprising an observed count is against its expected value: the Poisson upper tail, in log space.

The surprise of observing ``n`` or more events where ``mu`` were expected is ``-log10 P(X >= n)`` for
``X ~ Poisson(mu)``: 0 when nothing unusual happened, 2 for a one-in-a-hundred count, 6 for one in a
million. For whole ``n``, ``P(X >= n)`` equals the regularized lower incomplete gamma function
``P(n, mu)``, which is also defined between whole numbers: weighted counts (3.5 "standard events") get a
smooth, increasing surprise instead of a staircase.

Tail probabilities of real incidents are tiny (1e-12 and below), so they are computed as logarithms and
never underflow.
"""

from __future__ import annotations

import math

_LN10 = math.log(10.0)
_EPSILON = 1e-14
_MAX_TERMS = 10_000
MAX_SURPRISE = 50.0  # beyond one in 1e50 the number means nothing more; keeps reports readable


def log_lower_regularized_gamma(a: float, x: float) -> float:
    """ln P(a, x), the regularized lower incomplete gamma function, for a > 0 and x >= 0."""
    if a <= 0:
        raise ValueError("a must be > 0")
    if x <= 0:
        return -math.inf
    if x < a + 1:
        # Series: P(a, x) = x^a e^-x / Gamma(a + 1) * sum_k x^k / ((a + 1) ... (a + k)); converges fast here.
        term = total = 1.0
        k = a
        for _ in range(_MAX_TERMS):
            k += 1
            term *= x / k
            total += term
            if term < total * _EPSILON:
                break
        return a * math.log(x) - x - math.lgamma(a + 1) + math.log(total)
    # Continued fraction for Q = 1 - P (modified Lentz), accurate where the series is slow.
    b = x + 1 - a
    c = 1 / 1e-300
    d = 1 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPSILON:
            break
    upper = math.exp(a * math.log(x) - x - math.lgamma(a)) * h
    return math.log1p(-min(upper, 1.0 - 1e-16))


def poisson_surprise(observed: float, expected: float) -> float:
    """``-log10 P(X >= observed)`` for ``X ~ Poisson(expected)``, continuous in ``observed``; 0 if observed <= 0.

    ``expected`` must be > 0: a baseline never expects exactly nothing (its prior has a floor).
    """
    if expected <= 0:
        raise ValueError("expected must be > 0")
    if observed <= 0:
        return 0.0
    surprise = -log_lower_regularized_gamma(observed, expected) / _LN10
    return min(max(surprise, 0.0), MAX_SURPRISE)
