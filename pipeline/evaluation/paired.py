"""Two evaluations of the same problems compared problem by problem (exact McNemar test).

Two accuracies whose 95% intervals overlap can still differ for certain: when both policies face
the same problems, only the problems one solves and the other does not carry information about
which is better. Under "no difference" each such problem is as likely to be a gain as a loss, so
the count of gains is Binomial(gains + losses, 1/2); the exact two-sided p-value is twice its
smaller tail (capped at 1).
"""

from __future__ import annotations

from math import comb


def mcnemar_p_value(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value for ``gained`` and ``lost`` discordant problems."""
    if gained < 0 or lost < 0:
        raise ValueError(f"counts must be >= 0, got gained={gained}, lost={lost}")
    changed = gained + lost
    if changed == 0:
        return 1.0
    tail = sum(comb(changed, k) for k in range(min(gained, lost) + 1)) / 2**changed
    return min(1.0, 2 * tail)


def paired_change(
    before: dict, after: dict, method: str = "greedy", after_method: str | None = None
) -> dict | None:
    """How ``after`` (with ``after_method``, by default ``method``) differs from ``before`` (with
    ``method``) on the problems both evaluated: problems, gained, lost and the McNemar p-value;
    None when either lacks per-problem results (an evaluation written before they were
    recorded) or they share no problem. Two methods of one evaluation: pass it twice."""
    first, second = before.get("by_problem"), after.get("by_problem")
    other = after_method or method
    if not first or not second:
        return None
    shared = [
        pid for pid in first if pid in second and method in first[pid] and other in second[pid]
    ]
    if not shared:
        return None
    gained = sum(second[pid][other] and not first[pid][method] for pid in shared)
    lost = sum(first[pid][method] and not second[pid][other] for pid in shared)
    return {
        "problems": len(shared),
        "gained": gained,
        "lost": lost,
        "p_value": mcnemar_p_value(gained, lost),
    }
