"""raycf.pareto: the Pareto set against its definition, checked point by point against every other point."""
import random

import pytest

from raycf.pareto import pareto_set


def brute_force(points, modes):
    signs = [1 if m == "min" else -1 for m in modes]
    def beats(q, p):
        return all(s * a <= s * b for s, a, b in zip(signs, q, p)) and q != p
    return [i for i, p in enumerate(points) if not any(beats(q, p) for q in points)]


def test_by_hand():
    # (mean FG, learned-task gain): FG minimized, gain maximized
    pts = [(10.0, 5.0), (12.0, 7.0), (11.0, 4.0), (10.0, 5.0), (9.0, 1.0), (15.0, 7.0)]
    assert pareto_set(pts, ["min", "max"]) == [0, 1, 3, 4]  # 2 is beaten by 0; 5 by 1; equal points 0 and 3 stay
    assert pareto_set([], ["min", "max"]) == []
    assert pareto_set([(1.0, 2.0, 3.0)], ["min", "min", "max"]) == [0]


@pytest.mark.parametrize("seed", range(20))
def test_equals_the_brute_force_set_on_random_points_with_ties(seed):
    rng = random.Random(seed)
    dims = rng.choice([2, 3, 4])
    modes = [rng.choice(["min", "max"]) for _ in range(dims)]
    points = [tuple(float(rng.randint(0, 6)) for _ in range(dims)) for _ in range(rng.randint(1, 40))]
    assert pareto_set(points, modes) == brute_force(points, modes)
