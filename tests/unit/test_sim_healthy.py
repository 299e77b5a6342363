"""A healthy fleet as messy as a real one: workload phases, environment and operations, none of them faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.kubernetes.annotations import CORDONED_BY
from simulator.hardware import DRIVER_VERSION
from simulator.kube.objects import WORKLOAD_LABEL
from simulator.lifecycle import BATCH_NAMESPACE
from simulator.operations import DRIVER_LABEL
from simulator.recording import FrameRecorder
from simulator.scenario import ScenarioError, scenario_from_dict
from simulator.scenario_files import load_scenario
from simulator.twin import Twin

FRIDAY = 1_767_312_000.0  # 2026-01-02T00:00Z
SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"


def scenario(workloads: list[dict[str, Any]], healthy: dict[str, Any] | None = None, **extra: Any) -> Twin:
    data: dict[str, Any] = {
        "name": "healthy-test",
        "seed": 5,
        "fleet": {"nodes": 2, "gpus_per_node": 4},
        "duration": "2h",
        "step": "15s",
        "workloads": workloads,
        "faults": [],
        **extra,
    }
    if healthy is not None:
        data["healthy"] = healthy
    return Twin(scenario_from_dict(data))


def trace(twin: Twin, *keys: str, steps: int | None = None) -> dict[str, np.ndarray]:
    """Step the twin to its end (or `steps` steps), recording physics arrays at every step."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    n = 0
    while not twin.finished and (steps is None or n < steps):
        twin.step()
        n += 1
        for k in keys:
            out[k].append(np.array(getattr(twin.physics, k), dtype=float))
    return {k: np.array(v) for k, v in out.items()}


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-d boolean array."""
    padded = np.concatenate([[0], mask.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return (edges[1::2] - edges[0::2]).tolist()


def test_a_checkpoint_stalls_every_rank_for_its_length_with_memory_held() -> None:
    twin = scenario(
        [{"type": "training", "name": "llm", "nodes": 2, "checkpoint_every": "30m"}],
        {"training": {"checkpoint_stall": ["5m", "5m"]}},
    )
    rec = trace(twin, "util", "fb_used", "power")
    stalled = (rec["util"] == 0).all(axis=1)  # every rank of the job at once
    assert (rec["util"] == 0).any(axis=1).tolist() == stalled.tolist()
    lengths = runs(stalled)
    assert len(lengths) in (3, 4) and max(lengths) == 20  # 5 min of 15 s samples, every 30 min
    assert rec["fb_used"].min() > 50_000  # the framebuffer stays held through the stall
    assert np.ptp(rec["fb_used"][stalled].mean(axis=1)) < 1_000
    assert rec["power"][stalled].max() < 90  # near idle
    assert rec["util"][~stalled].min() > 80


def test_a_notebook_idles_with_memory_held_then_bursts() -> None:
    twin = scenario(
        [{"type": "notebook", "name": "nb", "users": 8, "bursts_per_day": 12}],
        fleet={"nodes": 1, "gpus_per_node": 8},
        duration="8h",
        step="1m",
    )
    rec = trace(twin, "util", "fb_used")
    held = rec["fb_used"][2:]  # the pods start within the first samples
    assert held.min() > 4 * 1024
    idle = rec["util"][2:] == 0
    assert idle.mean() > 0.6  # idle most of the time, memory still held
    assert (held[idle] > 4 * 1024).all()
    assert (rec["util"] > 15).any(axis=0).sum() >= 3  # and some notebooks burst
    pods = twin.kube.list_pods(namespace="notebooks")
    assert len(pods) == 8 and all(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
                                  for p in pods)


def test_weekend_inference_load_is_lower_than_weekday() -> None:
    twin = scenario(
        [{"type": "inference", "name": "api", "replicas": 8, "peak_load": 0.8, "trough_load": 0.3}],
        {"inference": {"weekend_factor": 0.6}},
        start=FRIDAY,
        duration="2d",
        step="10m",
    )
    util = trace(twin, "util")["util"].mean(axis=1)
    friday, saturday = util[: 144 - 1].mean(), util[144:].mean()
    assert saturday < 0.7 * friday


def test_inference_bursts_raise_load_for_minutes() -> None:
    workloads = [{"type": "inference", "name": "api", "replicas": 8, "peak_load": 0.4, "trough_load": 0.4}]
    calm = trace(scenario(workloads, {}), "util")["util"].mean(axis=1)
    bursty = trace(scenario(workloads, {"inference": {"bursts_per_day": 48, "burst_factor": [2, 2]}}),
                   "util")["util"].mean(axis=1)
    assert calm.max() < 50
    assert bursty.max() > 70 and max(runs(bursty > 70)) >= 8  # at least 2 minutes at twice the load


def test_a_cooling_event_warms_a_rack_without_taking_any_gpu_to_slowdown() -> None:
    twin = scenario(
        [{"type": "training", "name": "llm", "nodes": 8, "intensity": 0.97, "checkpoint_every": "6h"}],
        {"environment": {"rack_size": 4, "cooling_events_per_day": 150, "cooling_rise_c": [6, 10],
                         "cooling_length": ["20m", "30m"]}},
        fleet={"nodes": 8, "gpus_per_node": 8},
        duration="3h",
    )
    offsets: list[np.ndarray] = []
    temps: list[np.ndarray] = []
    while not twin.finished:
        twin.step()
        offsets.append(twin.physics.inlet_offset.copy())
        temps.append(twin.physics.temp.copy())
    inlet, temp = np.array(offsets), np.array(temps)
    node = int(np.argmax(inlet.max(axis=0)))
    peak = int(np.argmax(inlet[:, node]))
    assert inlet[peak, node] >= 3.0  # several degrees warmer inlet air
    before = int(np.flatnonzero(inlet[:peak, node] == 0)[-1])
    rows = slice(node * 8, node * 8 + 8)
    assert temp[peak, rows].mean() > temp[before, rows].mean() + 2.5
    spec = twin.spec
    assert temp.max() < spec.slowdown_temp_c and temp.max() < spec.max_operating_temp_c
    assert twin.physics.thermal_violation_us.max() == 0


def test_a_power_capped_node_under_heavy_load_runs_lower_sm_clocks() -> None:
    twin = scenario(
        [{"type": "training", "name": "llm", "nodes": 4, "intensity": 0.98, "checkpoint_every": "6h"}],
        {"environment": {"power_capped_share": 0.5, "power_cap_w": [500, 550]}},
        fleet={"nodes": 4, "gpus_per_node": 8},
        duration="30m",
    )
    rec = trace(twin, "sm_clock", "power")
    limit = twin.physics.power_limit
    capped = limit < twin.spec.power_limit_w
    assert capped.any() and (~capped).any()
    assert ((limit[capped] >= 500) & (limit[capped] <= 550)).all()
    clocks = rec["sm_clock"][-20:].mean(axis=0)
    assert clocks[capped].max() < clocks[~capped].min()
    assert (rec["power"][-20:, capped] <= limit[capped] + 1e-9).all()
    assert (twin.physics.power_violation_us[capped] > 0).all()


def test_a_scrape_gap_makes_the_nodes_series_absent_for_that_time() -> None:
    twin = scenario(
        [{"type": "inference", "name": "api", "replicas": 4}],
        {"operations": {"scrape_gaps_per_node_day": 300, "scrape_gap_samples": [2, 3]}},
        duration="1h",
    )
    absent = 0
    for _ in range(200):
        if twin.finished:
            break
        twin.step()
        text = twin.dcgm_text()
        scraped = twin.healthy.scraped(twin.t)
        for i, node in enumerate(twin.nodes):
            assert (f'Hostname="{node}"' in text) == bool(scraped[i])
            absent += not scraped[i]
        assert 'kube_node_status_condition{node="gpu-node-001"' in twin.kube_state_text()
    assert absent >= 4


def test_an_exporter_restart_resets_cumulative_counters() -> None:
    twin = scenario(
        [{"type": "training", "name": "llm", "nodes": 2}],
        {"operations": {"exporter_restarts_per_node_day": 100}},
        duration="1h",
    )
    energy: list[np.ndarray] = []
    nvlink: list[np.ndarray] = []
    times: list[float] = []
    while not twin.finished:
        twin.step()
        times.append(twin.t)
        energy.append(twin.physics.energy_mj.copy())
        nvlink.append(twin.physics.nvlink_bandwidth_kib.copy())
    restarts = twin.healthy.operations.restarts
    assert restarts
    at, node = restarts[0]
    i, rows = times.index(at), slice(twin.nodes.index(node) * 4, twin.nodes.index(node) * 4 + 4)
    assert (energy[i][rows] < energy[i - 1][rows]).all()
    assert (energy[i][rows] < 800 * 15 * 1000).all()  # one step of energy (mJ): the count began again at 0
    assert (nvlink[i][rows] < nvlink[i - 1][rows]).all()


def test_a_human_cordon_sets_unschedulable_without_gpuops_annotation() -> None:
    twin = scenario(
        [{"type": "inference", "name": "api", "replicas": 2}],
        {"operations": {"human_cordons_per_day": 400, "human_cordon_length": ["10m", "15m"]}},
        fleet={"nodes": 4, "gpus_per_node": 4},
        duration="1h",
    )
    seen: set[str] = set()
    while not twin.finished:
        twin.step()
        for node in twin.kube.list_nodes():
            if node["spec"].get("unschedulable"):
                seen.add(node["metadata"]["name"])
                assert CORDONED_BY not in (node["metadata"].get("annotations") or {})
    assert seen
    cordoned_now = {n["metadata"]["name"] for n in twin.kube.list_nodes() if n["spec"].get("unschedulable")}
    assert cordoned_now == set(twin.healthy.operations.human_cordons)  # the others were uncordoned again


def test_a_driver_upgrade_drains_reboots_and_relabels_the_node() -> None:
    twin = scenario(
        [{"type": "inference", "name": "api", "replicas": 8}],
        {"operations": {"driver_upgrade": {"at": "10m", "version": "550.144.03", "every": "2h",
                                           "nodes": 1, "reboot": ["4m", "4m"]}}},
        duration="1h",
    )
    twin.physics.sbe[:] = 3  # volatile ECC counts that a driver reload clears
    ready: list[list[bool]] = []
    cordoned: list[list[bool]] = []
    while not twin.finished:
        twin.step()
        ready.append([twin.kube.node_ready(n) for n in twin.nodes])
        cordoned.append([bool(twin.kube.get_node(n)["spec"].get("unschedulable")) for n in twin.nodes])
    (node,) = twin.healthy.operations.upgrades
    i = twin.nodes.index(node)
    node_ready, node_cordoned = np.array(ready)[:, i], np.array(cordoned)[:, i]
    assert node_ready[0] and not node_ready.all() and node_ready[-1]
    assert runs(~node_ready) == [16]  # NotReady for the 4 minute reboot, once
    assert not node_cordoned[0] and node_cordoned.any() and not node_cordoned[-1]
    assert np.flatnonzero(node_cordoned)[0] < np.flatnonzero(~node_ready)[0]  # cordoned and drained first
    obj = twin.kube.get_node(node)
    assert obj["metadata"]["labels"][DRIVER_LABEL] == "550.144.03"
    assert obj["status"]["nodeInfo"]["bootID"] == "1"
    assert {p["status"]["phase"] for p in twin.kube.list_pods(node=node)} == {"Running"}  # work came back
    text = twin.dcgm_text()
    assert f'Hostname="{node}",DCGM_FI_DRIVER_VERSION="550.144.03"' in text
    other = next(n for n in twin.nodes if n != node)
    assert f'Hostname="{other}",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"' in text
    rows = slice(twin.nodes.index(node) * 4, twin.nodes.index(node) * 4 + 4)
    assert (twin.physics.sbe[rows] == 0).all()
    assert twin.kube.get_node(other)["metadata"]["labels"][DRIVER_LABEL] == DRIVER_VERSION


def test_nodes_join_the_fleet_mid_run() -> None:
    twin = scenario(
        [{"type": "inference", "name": "api", "replicas": 2}],
        {"operations": {"nodes_added": [{"at": "30m", "count": 1}]}},
        fleet={"nodes": 3, "gpus_per_node": 4},
        duration="1h",
    )
    assert [n["metadata"]["name"] for n in twin.kube.list_nodes()] == ["gpu-node-001", "gpu-node-002"]
    twin.advance_to(twin.start + 1500)
    assert 'Hostname="gpu-node-003"' not in twin.metrics_text()
    twin.advance_to(twin.start + 1900)
    assert len(twin.kube.list_nodes()) == 3 and twin.kube.node_ready("gpu-node-003")
    assert 'Hostname="gpu-node-003"' in twin.metrics_text()


def test_training_jobs_end_and_new_ones_start() -> None:
    twin = scenario(
        [{"type": "training", "name": "llm", "nodes": 2}],
        {"training": {"jobs_per_day": 200, "job_length": ["20m", "40m"], "job_nodes": [1, 2]}},
        fleet={"nodes": 4, "gpus_per_node": 4},
        duration="3h",
    )
    twin.advance_to(twin.end)
    assert "llm" not in twin.book.specs  # the first job finished; its nodes went idle or to new jobs
    assert twin.healthy.lifecycle.jobs_submitted >= 2
    running = {p["metadata"]["labels"][WORKLOAD_LABEL] for p in twin.kube.list_pods(namespace="training")
               if p["status"]["phase"] == "Running"}
    assert running and running <= set(twin.book.specs)


def test_a_batch_run_holds_high_load_then_is_gone() -> None:
    twin = scenario(
        [{"type": "batch", "name": "embed", "pods": 2, "gpus_per_pod": 2, "at": "10m", "length": "30m"}],
        duration="1h",
    )
    util = trace(twin, "util")["util"]
    busy = (util > 80).sum(axis=1)
    assert busy[:35].max() == 0 and busy[45:150].min() == 4 and busy[-40:].max() == 0
    assert not twin.kube.list_pods(namespace=BATCH_NAMESPACE)


def test_without_the_healthy_block_the_telemetry_is_unchanged() -> None:
    base = load_scenario(SCENARIOS / "control_small.yaml")
    assert base.healthy is None
    plain, empty = Twin(base), Twin(base.model_copy(update={"healthy": scenario_from_dict(
        {"name": "x", "healthy": {}}).healthy}))
    assert plain.book.behaviour is None and not plain.healthy.environment.active
    for _ in range(120):
        plain.step()
        empty.step()
    assert plain.metrics_text(timestamps=True) == empty.metrics_text(timestamps=True)
    assert (plain.physics.inlet_offset == 0).all()
    assert (plain.physics.power_limit == plain.spec.power_limit_w).all()
    assert plain.visible_rows() == list(range(plain.n))


@pytest.mark.parametrize(
    ("healthy", "message"),
    [
        ({"training": {"checkpoint_stal": ["1m", "2m"]}}, "healthy.training.checkpoint_stal"),
        ({"environment": {"cooling_rise_c": [8, 3]}}, "healthy.environment.cooling_rise_c"),
        ({"operations": {"nodes_added": [{"at": "30m", "count": 3}]}}, "3 nodes join later"),
        ({"operations": {"nodes_added": [{"at": "2h", "count": 1}]}}, "after the end"),
        ({"operations": {"driver_upgrade": {"at": "1h", "version": "latest"}}}, "driver_upgrade.version"),
        ({"weather": {}}, "healthy.weather"),
    ],
)
def test_bad_healthy_fields_are_refused_naming_the_field(healthy: dict[str, Any], message: str) -> None:
    data = {"name": "bad", "fleet": {"nodes": 4, "gpus_per_node": 4}, "healthy": healthy,
            "workloads": [{"type": "training", "name": "llm", "nodes": 2}]}
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(data)


def test_an_unknown_notebook_field_is_refused() -> None:
    data = {"name": "bad", "workloads": [{"type": "notebook", "name": "nb", "users": 2, "idle": "1h"}]}
    with pytest.raises(ScenarioError, match=r"workloads\.0\.notebook\.idle"):
        scenario_from_dict(data)


@pytest.mark.parametrize("path", sorted((SCENARIOS / "healthy").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_healthy_library_loads_with_no_faults(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.faults == [] and loaded.approval == "auto_approve"
    assert not sorted(SCENARIOS.glob("*.yaml")) or path not in sorted(SCENARIOS.glob("*.yaml"))


def test_the_healthy_week_is_a_week_of_64_nodes_with_every_part_on() -> None:
    week = load_scenario(SCENARIOS / "healthy" / "week.yaml")
    assert week.duration >= 7 * 86400 and week.fleet.nodes == 64 and week.fleet.gpus_per_node == 8
    assert week.healthy is not None
    ops, env, training = week.healthy.operations, week.healthy.environment, week.healthy.training
    assert training.checkpoint_stall and training.eval_every and training.jobs_per_day > 0
    assert week.healthy.inference.weekend_factor < 1 and week.healthy.inference.bursts_per_day > 0
    assert env.cooling_events_per_day > 0 and env.power_capped_share > 0 and env.rack_inlet_spread_c > 0
    assert ops.scrape_gaps_per_node_day > 0 and ops.exporter_restarts_per_node_day > 0
    assert ops.human_cordons_per_day > 0 and ops.driver_upgrade is not None and ops.nodes_added
    types = {w.type for w in week.workloads or []}
    assert types == {"training", "inference", "notebook", "batch"}


def test_an_evicted_notebook_comes_back_as_its_statefulset_would() -> None:
    twin = scenario([{"type": "notebook", "name": "nb", "users": 2}], duration="30m")
    twin.advance_to(twin.start + 120)
    (pod, _) = sorted(p["metadata"]["name"] for p in twin.kube.list_pods(namespace="notebooks"))
    created = twin.kube.get_object("pods", "notebooks", pod)["metadata"]["creationTimestamp"]
    twin.kube.evict("notebooks", pod)
    twin.advance_to(twin.start + 300)
    assert twin.kube.get_object("pods", "notebooks", pod)["metadata"]["creationTimestamp"] != created
    phases = {p["metadata"]["name"]: p["status"]["phase"] for p in twin.kube.list_pods(namespace="notebooks")}
    assert phases == {"nb-0-0": "Running", "nb-1-0": "Running"}


def test_the_frame_recorder_shows_a_node_that_has_not_joined_as_absent() -> None:
    twin = scenario([{"type": "inference", "name": "api", "replicas": 2}],
                    {"operations": {"nodes_added": [{"at": "30m", "count": 1}]}}, duration="1h")
    recorder = FrameRecorder(twin)
    recorder.step()
    ready = next(iter(recorder.frame().node_metrics.values()))
    assert ready[0, -1] == 1.0 and np.isnan(ready[1, -1])
