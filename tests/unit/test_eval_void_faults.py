"""A job fault drawn on a GPU that runs no job cannot happen, nor a leak on a GPU that no pod ever runs on: the
twin's truth says the fault found no workload, and the evaluation leaves it out of every total instead of
charging a miss and its GPU-hours. A job placed on such a slow GPU later meets it: the truth says when, so the
incident it opens is no false one."""

from __future__ import annotations

from typing import Any

from evaluation.baselines import baseline_run, gpu_hours_lost
from evaluation.report import _counted, _fault_key, _nothing_to_overload, _void_in_run, _void_reason
from simulator.scenario import scenario_from_dict
from simulator.twin import Twin


def _twin(faults: list[dict[str, Any]], *later: dict[str, Any]) -> Twin:
    return Twin(scenario_from_dict({
        "name": "t", "seed": 7, "fleet": {"nodes": 4, "gpus_per_node": 8}, "duration": "20m", "step": "15s",
        "workloads": [{"type": "training", "name": "job", "nodes": 2}, *later],  # nodes 001 and 002
        "faults": faults,
    }))


def test_the_truth_names_the_workload_a_job_fault_found_or_none() -> None:
    twin = _twin([{"kind": "straggler", "node": "gpu-node-001", "gpu": 0, "at": "5m"},
                  {"kind": "straggler", "node": "gpu-node-004", "gpu": 0, "at": "5m"},
                  {"kind": "hung_job", "node": "gpu-node-004", "gpu": 1, "at": "5m"}])
    twin.advance_to(twin.start + 600)
    found = {(f["kind"], f["node"]): f["params"].get("workload") for f in twin.truth()["faults"]}
    assert found[("straggler", "gpu-node-001")] == "job"
    assert found[("straggler", "gpu-node-004")] == "" and found[("hung_job", "gpu-node-004")] == ""

    void = _void_in_run(twin.truth()["faults"])
    assert set(void) == {_fault_key(f) for f in twin.truth()["faults"] if f["node"] == "gpu-node-004"}
    assert all(_void_reason(f, None).endswith("nothing to hang or slow") for f in void.values())


def test_a_job_placed_on_an_idle_slow_gpu_later_meets_the_fault() -> None:
    batch = {"type": "batch", "name": "late", "pods": 2, "gpus_per_pod": 8, "at": "8m"}  # fills nodes 003 and 004
    twin = _twin([{"kind": "straggler", "node": "gpu-node-004", "gpu": 0, "at": "5m"}], batch)
    twin.advance_to(twin.start + 1200)
    (fault,) = twin.truth()["faults"]
    assert fault["params"]["workload"] == "" and fault["params"]["met_by"] == "late"
    assert fault["onset"] < fault["params"]["met_at"] <= fault["onset"].replace("00:05:00", "00:08:15")
    why = _void_reason(fault, 3)
    assert "late was placed there at" in why and "incident 3, not a false one" in why


def test_void_faults_are_listed_but_counted_nowhere() -> None:
    rows = [{"kind": "hung_job", "detected": False, "void": "no job ran"},
            {"kind": "hung_job", "detected": True}, {"kind": "xid79", "detected": True}]
    assert _counted(rows) == rows[1:]
    hardware = [{"kind": "xid79", "node": "n", "gpu": 0, "onset": "t", "params": {}},
                {"kind": "memory_leak", "node": "n", "gpu": 1, "onset": "t", "params": {"workload": ""}}]
    assert _void_in_run(hardware) == {}  # only job faults need a job; a leak waits for a pod of its own


def test_a_leak_waits_for_a_pod_and_one_that_no_pod_ever_met_is_void() -> None:
    batch = {"type": "batch", "name": "late", "pods": 1, "gpus_per_pod": 8, "at": "8m"}  # fills node 003
    twin = _twin([{"kind": "memory_leak", "node": "gpu-node-001", "gpu": 0, "at": "5m"},
                  {"kind": "memory_leak", "node": "gpu-node-003", "gpu": 1, "at": "5m"},
                  {"kind": "memory_leak", "node": "gpu-node-004", "gpu": 2, "at": "5m"}], batch)
    twin.advance_to(twin.start + 1200)
    faults = {f["node"]: f for f in twin.truth()["faults"]}
    assert faults["gpu-node-001"]["params"]["pod"].startswith("job-")  # its job's pod leaks from the onset
    met = faults["gpu-node-003"]["params"]
    assert met["pod"] == "" and met["met_by"].startswith("late") and met["met_at"] > faults["gpu-node-003"]["onset"]
    assert faults["gpu-node-004"]["params"]["pod"] == "" and "met_at" not in faults["gpu-node-004"]["params"]
    void = _void_in_run(list(faults.values()))
    assert set(void) == {_fault_key(faults["gpu-node-004"])}  # the late pod leaked: that one counts
    assert _void_reason(faults["gpu-node-004"], None) == "no pod ran on the GPU for the whole run: nothing to leak"


def _surge_scenario(gpu: int, factor: float = 4.0) -> dict[str, Any]:
    return {
        "name": "s", "seed": 7, "fleet": {"nodes": 2, "gpus_per_node": 8}, "duration": "1h", "step": "30s",
        "workloads": [{"type": "training", "name": "train", "nodes": 1},  # gpu-node-001
                      {"type": "inference", "name": "serve", "replicas": 4, "peak_load": 0.6}],  # gpu-node-002, 0-3
        "faults": [{"kind": "inference_overload", "node": "gpu-node-002" if gpu >= 0 else "gpu-node-001",
                    "gpu": abs(gpu), "at": "10m", "factor": factor, "duration": "20m"}],
    }


def _surge(gpu: int, factor: float = 4.0) -> dict[str, Any]:
    twin = Twin(scenario_from_dict(_surge_scenario(gpu, factor)))
    twin.advance_to(twin.start + 3600)
    (fault,) = twin.truth()["faults"]
    return dict(fault)


def test_a_surge_on_a_gpu_that_serves_no_deployment_is_no_overload() -> None:
    served = _surge(1)  # a replica of serve: at this hour (its trough, 0.30 a replica) demand rises fourfold
    assert served["params"]["peak_demand"] > 1.0 and _nothing_to_overload([served]) == {}
    for fault in (_surge(6), _surge(-1)):  # an idle GPU; the training job's GPU
        assert not fault["params"].get("peak_demand")
        assert _fault_key(fault) in _nothing_to_overload([fault])
        assert _void_reason(fault, None).startswith("no replica of a Deployment ran on the GPU")


def test_a_surge_the_replicas_had_room_for_is_no_overload() -> None:
    """Threefold at the trough leaves each replica below what it serves: every request is served, so there is
    nothing to find, fix or charge."""
    absorbed = _surge(1, factor=3.0)
    assert 0.5 < absorbed["params"]["peak_demand"] <= 1.0
    assert _fault_key(absorbed) in _nothing_to_overload([absorbed])
    assert _void_reason(absorbed, None).startswith("the replicas absorbed the surge (at its peak each was asked "
                                                   f"for {absorbed['params']['peak_demand']:.0%}")


def test_an_unmet_surge_costs_its_unserved_share_while_it_lasts() -> None:
    """The unserved share is what the peak asked beyond what the replicas serve (not the surge's factor, which
    the time of day scales), charged on the Deployment's GPUs from the onset until the surge ends."""
    base = baseline_run(scenario_from_dict(_surge_scenario(1)))
    (fault,), (impact,) = base.truth["faults"], base.impacts
    peak = fault["params"]["peak_demand"]
    assert impact.gpus == 4 and abs(impact.severity - (1.0 - 1.0 / peak)) < 1e-9 and impact.severity < 0.75
    assert impact.impact_end is not None and impact.impact_end - impact.impact_start == 1200.0
    assert abs(gpu_hours_lost(impact, None, base.end) - 4 * impact.severity * 1200.0 / 3600.0) < 1e-9
