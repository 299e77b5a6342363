"""A Deployment's replica held slow: its clock against its Deployment's working replicas on the same GPU model,
corroborated by its own power at this utilisation; a power or thermal limit explains a low clock, and replicas
that merely serve less are no stragglers."""

from __future__ import annotations

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding
from detectors.frame import FloatArray, GpuLabels
from detectors.pipeline import DetectionCycle
from tests.unit import det_synth

REPLICAS = 8
# the replica (at about 20 % of its GPU: it serves little) whose GPU a fault holds at 75 % of its clock from step 120
SLOW = 1


def serving(seed: int = 3, steps: int = 360) -> tuple[FloatArray, dict[str, FloatArray], GpuLabels]:
    """Eight replicas of one Deployment on one 8-GPU node, each at its own share of the traffic (15 to 60 %
    utilisation, moving), at the working clock; power follows each one's own load."""
    ts, met, _, _, _ = det_synth.healthy(nodes=1, gpus_per_node=REPLICAS, steps=steps, step_s=30.0, seed=seed)
    rng = np.random.default_rng(seed)
    share = np.linspace(0.15, 0.6, REPLICAS)[:, None] * (1 + 0.2 * np.sin(np.arange(steps) / 40.0))[None, :]
    load = np.clip(share + rng.normal(0, 0.02, (REPLICAS, steps)), 0.12, 1.0)
    met[m.GPU_UTIL] = 100 * load
    met[m.GR_ENGINE_ACTIVE] = load
    met[m.POWER_USAGE] = 70 + 630 * load**0.85 + rng.normal(0, 4, (REPLICAS, steps))
    met[m.SM_CLOCK] = np.full((REPLICAS, steps), 1980.0)
    gpus = GpuLabels(hostname=("gpu-node-001",) * REPLICAS, gpu=tuple(range(REPLICAS)),
                     uuid=tuple(f"GPU-{i}" for i in range(REPLICAS)), model_name=("NVIDIA H100 80GB HBM3",) * REPLICAS,
                     pod=tuple(f"chat-7d9f8c6b5-x2k4{c}" for c in "bcdfghjk"), namespace=("serve",) * REPLICAS)
    return ts, met, gpus


def hold_slow(met: dict[str, FloatArray], row: int = SLOW, ratio: float = 0.75, at: int = 120) -> None:
    met[m.SM_CLOCK][row, at:] = 1980 * ratio
    dynamic = met[m.POWER_USAGE][row, at:] - 70
    met[m.POWER_USAGE][row, at:] = 70 + dynamic * ratio**2


def stragglers(ts: FloatArray, met: dict[str, FloatArray], gpus: GpuLabels) -> list[Finding]:
    return [f for f in DetectionCycle().update(det_synth.frame(ts, met, gpus)) if f.kind == "straggler"]


def test_a_replica_held_slow_is_a_corroborated_straggler_and_its_siblings_serving_less_are_not() -> None:
    ts, met, gpus = serving()
    hold_slow(met)
    found = stragglers(ts, met, gpus)
    assert found and {f.gpu for f in found} == {SLOW}
    first = found[0]
    assert ts[120] < first.ts <= ts[124]
    assert first.evidence["replica"] and first.evidence["sm_clock_mhz"] == 1485.0
    assert first.evidence["deployment_median_sm_clock_mhz"] == 1980.0
    assert first.evidence["signals"] == ["power_below_own_at_equal_load"]
    assert found[-1].ts > ts[300] and all(f.evidence["corroborated"] for f in found)  # held slow for two hours,
    # it never becomes its own measure


def test_replicas_at_their_working_clock_are_quiet_however_unequal_their_traffic() -> None:
    ts, met, gpus = serving()
    assert stragglers(ts, met, gpus) == []


def test_a_replica_held_by_its_power_or_thermal_limit_is_explained_not_corroborated() -> None:
    for counter, why in ((m.POWER_VIOLATION, "power_limit"), (m.THERMAL_VIOLATION, "thermal_limit")):
        ts, met, gpus = serving()
        hold_slow(met)
        rising = np.zeros_like(met[m.GPU_TEMP])
        rising[SLOW, 120:] = np.cumsum(np.full(rising.shape[1] - 120, 30e6))
        met[counter] = rising
        found = stragglers(ts, met, gpus)
        assert found and all(not f.evidence["corroborated"] and f.evidence["explained_by"] == why for f in found)


def test_a_replica_new_to_its_gpu_is_not_measured_against_the_pod_before_it() -> None:
    """The slow GPU's replica is replaced at the moment it slows (another model draws otherwise): its own history
    starts with the new pod, already slow, so its power never reads low against it. The low clock is reported,
    uncorroborated: it pages nobody (the cost of never measuring a pod by the one before it)."""
    ts, met, gpus = serving()
    hold_slow(met)
    pods = list(gpus.pod)
    frames = [(slice(0, 120), gpus), (slice(120, None), GpuLabels(
        hostname=gpus.hostname, gpu=gpus.gpu, uuid=gpus.uuid, model_name=gpus.model_name,
        pod=tuple(p if i != SLOW else "chat-7d9f8c6b5-zz9zv" for i, p in enumerate(pods)), namespace=gpus.namespace))]
    cycle, found = DetectionCycle(), []
    for cols, labels in frames:
        found += [f for f in cycle.update(det_synth.frame(ts[cols], {k: v[:, cols] for k, v in met.items()}, labels))
                  if f.kind == "straggler"]
    assert found and {f.gpu for f in found} == {SLOW}
    assert not any(f.evidence["corroborated"] for f in found)


def test_replicas_on_another_gpu_model_are_not_its_measure() -> None:
    """Half the replicas on an older model run at its lower clock: neither half is slow against its own."""
    ts, met, gpus = serving()
    met[m.SM_CLOCK][4:] = 1410.0
    models = ("NVIDIA H100 80GB HBM3",) * 4 + ("NVIDIA A100-SXM4-80GB",) * 4
    mixed = GpuLabels(hostname=gpus.hostname, gpu=gpus.gpu, uuid=gpus.uuid, model_name=models, pod=gpus.pod,
                      namespace=gpus.namespace)
    assert stragglers(ts, met, mixed) == []
