"""The benchmark's side-by-side helpers: every contender timed every repetition, in alternating order."""

from __future__ import annotations

from amf.bench.bench import rows_over, side_by_side


def test_side_by_side_alternates_and_rows_compare_with_the_base():
    order: list[str] = []
    walls = side_by_side({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in walls.items()} == {"a": 3, "b": 3} and all(w >= 0 for v in walls.values() for w in v)
    rows = rows_over("a", {"a": [2.0, 4.0, 3.0], "b": [1.0, 1.5, 2.0]}, {"a": 0.1, "b": 0.2}, {"a": 0.0, "b": 1e-7})
    assert rows["a"]["speedup_over_a"] == 1.0 and rows["b"]["speedup_over_a"] == 2.0
    assert rows["b"]["median_s"] == 1.5 and rows["b"]["walls"] == [1.0, 1.5, 2.0] and rows["b"]["build_s"] == 0.2
