"""The Pareto set of trials under several objectives, each minimized or maximized (sweep.objectives; the report's
learning-vs-forgetting front)."""
from __future__ import annotations


def pareto_set(points: list[tuple[float, ...]], modes: list[str]) -> list[int]:
    """Indices (ascending) of the points that no other point dominates: no worse in every objective and better in
    one, `modes[j]` saying whether objective j is minimized ("min") or maximized ("max"). Equal points are all in
    the set. Points are scanned in lexicographic order of their minimized form: a point can only be dominated by
    one before it, and if by any, then by one already in the set (dominance is transitive)."""
    signs = [1.0 if m == "min" else -1.0 for m in modes]
    keyed = sorted(range(len(points)), key=lambda i: tuple(s * x for s, x in zip(signs, points[i])))
    front: list[tuple[float, ...]] = []
    keep = []
    for i in keyed:
        p = tuple(s * x for s, x in zip(signs, points[i]))
        if not any(all(a <= b for a, b in zip(q, p)) and q != p for q in front):
            front.append(p)
            keep.append(i)
    return sorted(keep)
