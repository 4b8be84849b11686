"""The bookkeeping of benchmarks/time_to_accuracy.py: the shared evaluation schedule, the clock
that excludes evaluation, and medians that count a missed target as slower than any time.
(The benchmark itself trains for minutes; it runs from benchmarks/, not here.)"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def tta():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling helpers as a file would
    try:
        spec = importlib.util.spec_from_file_location("time_to_accuracy", BENCHMARKS / "time_to_accuracy.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("time_to_accuracy", None)
        sys.path.remove(str(BENCHMARKS))


def _records(capsys) -> list[dict]:
    return [json.loads(line[7:]) for line in capsys.readouterr().out.splitlines() if line.startswith("RECORD ")]


def test_probe_evaluates_on_schedule_and_stops_at_the_hardest_target(tta, capsys):
    task = tta.Task("accuracy", "test", (0.5, 0.9), 100, {})
    values = iter([0.4, 0.6, 0.95])
    probe = tta.Probe(lambda: next(values), task, every=100, budget=1e9)
    probe.after(60)          # not yet an evaluation
    probe.after(60)          # 120 seen: the first
    probe.after(80)          # 200 seen: the second
    with pytest.raises(tta.Stop):
        probe.after(100)     # 300 seen: 0.95 reaches 0.9, the hardest target
    records = _records(capsys)
    assert [r["examples"] for r in records] == [120, 200, 300]
    assert [r["value"] for r in records] == [0.4, 0.6, 0.95]


def test_a_full_probe_runs_past_the_targets(tta, capsys):
    task = tta.Task("accuracy", "test", (0.5,), 10, {})
    probe = tta.Probe(lambda: 0.99, task, every=10, budget=1e9, full=True)
    for _ in range(3):
        probe.after(10)  # 0.99 is past the target every time: no Stop until the budget
    probe.measure(final=True)
    assert len(_records(capsys)) == 4


def test_probe_stops_at_the_budget_and_excludes_evaluation_time(tta, capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(tta, "clock", lambda: now[0])
    task = tta.Task("loss", "val", (1.7,), 10, {})

    def evaluate() -> float:
        now[0] += 5.0  # evaluation takes 5 s; it must not count as training
        return 2.0

    probe = tta.Probe(evaluate, task, every=10, budget=3.0)
    now[0] = 2.0
    probe.after(10)          # 2 s trained: under budget
    now[0] += 2.0
    with pytest.raises(tta.Stop):
        probe.after(10)      # 4 s trained (plus 5 s of evaluation): over the 3 s budget
    records = _records(capsys)
    assert [r["seconds"] for r in records] == [2.0, 4.0]
    assert [r["eval_seconds"] for r in records] == [5.0, 10.0]


def test_a_missed_target_counts_as_slower_than_any_time(tta):
    task = tta.Task("accuracy", "test", (0.99,), 10, {})

    def run(*pairs):
        return [{"seconds": s, "value": v, "eval_seconds": 1.0} for s, v in pairs]

    results = {"fast": {0: run((10, 0.98), (20, 0.991)), 1: run((12, 0.992)), 2: run((30, 0.985))},
               "slow": {0: run((50, 0.991)), 1: run((60, 0.98)), 2: run((70, 0.97))}}
    summary = tta.summarize(task, results)
    assert summary["fast"]["0.99"] == {"reached": 2, "seconds": [20, 12, None], "median": 20}
    assert summary["slow"]["0.99"]["median"] is None  # most seeds missed: no median time
    assert math.isclose(summary["fast"]["best"], 0.991)
    table = tta.table(task, summary)
    assert "| fast | 20.0 (2/3) |" in table and "| slow | — (1/3) |" in table


def test_every_task_recipe_is_a_file(tta):
    for name, task in tta.TASKS.items():
        for tool, recipe in task.tools.items():
            assert recipe is None or recipe.is_file(), f"{name}/{tool}: {recipe} is missing"
