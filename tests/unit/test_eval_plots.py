"""The evaluation's plots read well: each fault's timeline panel is zoomed to its own events (not the scenario's
hours), and GPU-hours lost are bars with their values on linear axes, a dwarfing scenario and the total apart, the
legend outside the bars. Asserted on the figures' properties, not on pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Rectangle

from evaluation.plots import gpu_hours, gpu_hours_figure, timeline, timeline_figure

ONSET = 1_767_225_600.0


def fault(kind: str, **events: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"onset": ONSET, "failure": None, "detected": None, "incident": None, "resolved": None,
                         "actions": [], "mitigated": None, "handed": None, "threshold": None,
                         "end": ONSET + 3.5 * 3600}
    t.update({k: (ONSET + v if isinstance(v, (int, float)) else v) for k, v in events.items()})
    return {"kind": kind, "node": "gpu-node-003", "gpu": 2, "_timeline": t}


def scenario(name: str, gpuops: float, none: float, threshold: float) -> dict[str, Any]:
    return {"scenario": name, "summary": {"gpu_hours_lost": {"gpuops": gpuops, "no_automation": none,
                                                             "threshold_alerts": threshold}}}


def test_each_fault_panel_is_zoomed_to_its_events_not_to_the_scenario() -> None:
    quick = fault("xid79", detected=45, incident=60, actions=[[ONSET + 240, "drain_node"]], mitigated=300,
                  resolved=420, failure=900)
    slow = fault("straggler", detected=1800, incident=1830, handed=1830 + 1800, threshold=None)
    fig = timeline_figure({"scenario": "hard-faults", "faults": [quick, slow]})
    assert fig is not None
    quick_ax, slow_ax = fig.axes[:2]
    lo, hi = quick_ax.get_xlim()
    assert lo <= 0 and hi >= 900 / 60  # onset to the failure in the untouched run, in minutes
    assert hi - lo < 25  # a quarter of an hour of events, not the 210 minutes of the scenario
    assert quick_ax.get_xlabel() == "minutes after the fault's onset"
    assert "drain_node" in [t.get_text() for t in quick_ax.texts]
    assert any(t.get_text() == "scenario ends at +3.5 h" for t in quick_ax.texts)
    slo, shi = slow_ax.get_xlim()
    assert slo <= 0 and shi >= 3630 / 60 and shi < 80
    assert slow_ax.get_title(loc="left") == "straggler on gpu-node-003/2"
    [legend] = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:5] == ["fault starts", "detected", "incident opened", "action executed", "gpuops mitigated"]
    assert "threshold alert + 30 min" not in labels  # never happened in these faults
    assert all(ax.get_legend() is None for ax in fig.axes)
    plt.close(fig)


def test_a_lone_detection_still_gets_a_readable_window() -> None:
    fig = timeline_figure({"scenario": "s", "faults": [fault("ecc", detected=30)]})
    assert fig is not None
    lo, hi = fig.axes[0].get_xlim()
    assert hi - lo == pytest.approx(10.0) and lo < 0 < 0.5 < hi
    plt.close(fig)


def test_gpu_hours_are_labelled_bars_on_linear_axes_with_a_dwarfing_scenario_apart() -> None:
    reports = [scenario("gpu-lost", 1.2, 30.5, 6.0), scenario("hard-faults", 0.8, 12.0, 4.4),
               scenario("thermal", 0.0, 9.0, 2.5), scenario("field-rates", 40.0, 2400.0, 310.0)]
    fig = gpu_hours_figure(reports)
    small, big, total = fig.axes
    assert [t.get_text() for t in small.get_xticklabels()] == ["gpu-lost", "hard-faults", "thermal"]
    assert [t.get_text() for t in big.get_xticklabels()] == ["field-rates"]
    assert [t.get_text() for t in total.get_xticklabels()] == ["all scenarios"]
    for ax in (small, big, total):
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
        values = [round(p.get_height(), 1) for p in ax.patches if isinstance(p, Rectangle)]
        labels = [float(t.get_text()) for t in ax.texts]
        assert sorted(labels) == sorted(values) and ax.get_ylim()[1] > max(values)
    assert 2400.0 in [float(t.get_text()) for t in big.texts]
    assert 2451.5 in [float(t.get_text()) for t in total.texts]
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["gpuops", "no automation", "threshold alerts"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    fig.canvas.draw()  # the legend sits above every panel's bars
    legend_box = legend.get_window_extent()
    assert all(legend_box.y0 >= ax.get_window_extent().y1 for ax in fig.axes)
    plt.close(fig)


def test_comparable_scenarios_share_one_panel_and_the_files_are_written(tmp_path: Path) -> None:
    reports = [scenario("a", 1.0, 3.0, 2.0), scenario("b", 2.0, 5.0, 4.0)]
    fig = gpu_hours_figure(reports)
    assert len(fig.axes) == 2  # the scenarios, then the total
    plt.close(fig)
    assert gpu_hours(reports, tmp_path / "g.png").stat().st_size > 0
    assert timeline({"scenario": "a", "faults": [fault("ecc", detected=30)]}, tmp_path / "t.png") is not None
    assert timeline({"scenario": "a", "faults": []}, tmp_path / "none.png") is None
