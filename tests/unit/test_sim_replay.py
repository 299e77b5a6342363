"""Replay scenarios: recorded per-pod duty cycle and memory (GenTD26's CSV format) drive inference replicas."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pytest

from simulator.replay import MAX_GAP_S, NAMESPACE
from simulator.scenario import ScenarioError, scenario_from_dict
from simulator.scenario_files import load_scenario
from simulator.twin import Twin

ROOT = Path(__file__).resolve().parents[2]
GENTD26 = Path(os.environ.get("GPUOPS_GENTD26", ROOT.parent / "shared" / "data" / "gentd26"))
T0 = 1_662_858_720.0  # any recording clock works: its first sample maps to the scenario's start
HEADER = "timestamp_anon,value,container_ip"


def write_csv(path: Path, rows: list[tuple[float, float, str]], gz: bool = False) -> Path:
    text = HEADER + "\n" + "".join(f"{T0 + t},{v},{ip}\n" for t, v, ip in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def samples(ip: str, first: float, last: float, value: float, every: float = 60.0) -> list[tuple[float, float, str]]:
    n = int((last - first) // every) + 1
    return [(first + i * every, value, ip) for i in range(n)]


def write_scenario(folder: Path, duty: list[tuple[float, float, str]], memory: list[tuple[float, float, str]],
                   extra: str = "duration: trace\n", fleet: str = "{nodes: 1, gpus_per_node: 4}") -> Path:
    write_csv(folder / "data" / "duty.csv", duty)
    write_csv(folder / "data" / "mem.csv.gz", memory, gz=True)
    path = folder / "scenarios" / "replay.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: r\nfleet: {fleet}\nstep: 60s\n{extra}"
                    "replay: {gpu_duty_cycle: ../data/duty.csv, gpu_memory_used_bytes: ../data/mem.csv.gz, name: sd}\n")
    return path


def two_pods(folder: Path, extra: str = "duration: trace\n") -> Path:
    """Pod a from 0 s to 600 s at 90 %, pod b from 300 s to 1200 s at 5 %; both hold 20 GiB."""
    duty = samples("a", 0, 600, 90.0) + samples("b", 300, 1200, 5.0)
    memory = samples("a", 0, 600, 20 * 2**30) + samples("b", 300, 1200, 20 * 2**30)
    return write_scenario(folder, duty, memory, extra)


def replay_pods(twin: Twin) -> dict[str, str]:
    """Running replay pods: source container_ip -> pod name."""
    return {p["metadata"]["labels"]["sim.gpuops.io/replay-source"]: p["metadata"]["name"]
            for p in twin.kube.list_pods(namespace=NAMESPACE) if p["status"]["phase"] == "Running"}


def reading(twin: Twin, metric: str, pod: str) -> float:
    match = re.search(rf'^{metric}{{[^}}]*pod="{pod}"}} (\S+)$', twin.metrics_text(), re.M)
    assert match, f"no {metric} for pod {pod}"
    return float(match.group(1))


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{T0 + 60},abc,a", r"line 3: field 'value' is not a number: 'abc'"),
        (f"{T0 + 60},nan,a", r"line 3: field 'value' is not a finite number"),
        (f"{T0 + 60},-1,a", r"line 3: field 'value' is negative"),
        (f"{T0 + 60},100.5,a", r"line 3: field 'value' is 100.5, above 100"),
        (f"{T0 + 60},,a", r"line 3: field 'value' is missing"),
        (f"{T0 + 60},5", r"line 3: field 'container_ip' is missing"),
        ("soon,5,a", r"line 3: field 'timestamp_anon' is not a number"),
    ],
)
def test_a_malformed_line_is_refused_naming_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = two_pods(tmp_path)
    duty = tmp_path / "data" / "duty.csv"
    lines = duty.read_text().splitlines()
    duty.write_text("\n".join([*lines[:2], line, *lines[2:]]) + "\n")
    with pytest.raises(ScenarioError, match=rf"(?s)replay\.yaml.*replay\.gpu_duty_cycle: .*duty\.csv {expected}"):
        load_scenario(path)


def test_a_missing_column_or_file_is_refused(tmp_path: Path) -> None:
    path = two_pods(tmp_path)
    (tmp_path / "data" / "mem.csv.gz").write_bytes(gzip.compress(b"timestamp_anon,container_ip\n1,a\n"))
    with pytest.raises(ScenarioError, match=r"replay\.gpu_memory_used_bytes: .*mem\.csv\.gz line 1: missing "
                                            r"column\(s\) value"):
        load_scenario(path)
    (tmp_path / "data" / "mem.csv.gz").unlink()
    with pytest.raises(ScenarioError, match=r"replay\.gpu_memory_used_bytes: cannot read .*mem\.csv\.gz"):
        load_scenario(path)


def test_gzip_is_recognised_by_its_magic_bytes_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = two_pods(tmp_path)
    duty = tmp_path / "data" / "duty.csv"
    duty.write_bytes(gzip.compress(duty.read_bytes()))  # gzip under a plain .csv name
    scenario = load_scenario(path)
    assert scenario.replay is not None
    assert Path(scenario.replay.gpu_duty_cycle) == duty.resolve()


# ---------------------------------------------------------------------------------------------- duration


def test_duration_trace_is_the_recording_length_rounded_up_to_a_step(tmp_path: Path) -> None:
    duty = samples("a", 0, 1000, 50.0, every=100.0)  # 0 … 1000 s
    assert load_scenario(write_scenario(tmp_path, duty, duty)).duration == 1020.0  # 17 steps of 60 s


def test_duration_trace_without_replay_names_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"duration: 'trace'.*no `replay:` section"):
        scenario_from_dict({"name": "s", "duration": "trace"})


def test_a_malformed_replay_section_is_named_rather_than_the_trace(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nduration: trace\nreplay: {gpu_duty_cycle: d.csv, memory: m.csv}\n")
    with pytest.raises(ScenarioError, match=r"(?s)replay\.gpu_memory_used_bytes: Field required.*replay\.memory"):
        load_scenario(path)


def test_a_plain_duration_truncates_or_idles_after_the_recording(tmp_path: Path) -> None:
    short = Twin(load_scenario(two_pods(tmp_path, extra="duration: 5m\n")))
    assert short.end - short.start == 300.0
    long = Twin(load_scenario(two_pods(tmp_path, extra="duration: 1h\n")))
    long.advance_to(long.start + 1800)
    assert replay_pods(long) == {}
    assert "DCGM_FI_DEV_GPU_UTIL" in long.metrics_text()


# ---------------------------------------------------------------------------------------------- the twin


def test_pods_run_only_between_their_first_and_last_sample(tmp_path: Path) -> None:
    twin = Twin(load_scenario(two_pods(tmp_path)))
    assert set(replay_pods(twin)) == {"a"}
    twin.advance_to(twin.start + 240)
    assert set(replay_pods(twin)) == {"a"}
    twin.advance_to(twin.start + 300)
    assert set(replay_pods(twin)) == {"a", "b"}
    twin.advance_to(twin.start + 600)
    assert set(replay_pods(twin)) == {"a", "b"}
    twin.advance_to(twin.start + 660)
    assert set(replay_pods(twin)) == {"b"}
    twin.advance_to(twin.end)
    assert set(replay_pods(twin)) == {"b"}  # its last sample is the trace's last step
    pod = twin.kube.list_pods(namespace=NAMESPACE)[0]
    assert re.fullmatch(r"sd-[a-z0-9]{10}-[a-z0-9]{5}", pod["metadata"]["name"])
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert pod["metadata"]["labels"]["app"] == "sd"


def test_a_long_silence_ends_the_pod_and_a_new_one_comes_back(tmp_path: Path) -> None:
    gap = MAX_GAP_S + 300
    duty = samples("a", 0, 600, 40.0) + samples("a", 600 + gap, 1800, 40.0)
    twin = Twin(load_scenario(write_scenario(tmp_path, duty, duty)))
    first = replay_pods(twin)["a"]
    twin.advance_to(twin.start + 900)
    assert replay_pods(twin) == {}
    twin.advance_to(twin.start + 1500)
    assert replay_pods(twin)["a"] != first


def test_replayed_duty_cycle_is_the_gpus_utilisation_and_power_follows(tmp_path: Path) -> None:
    twin = Twin(load_scenario(two_pods(tmp_path)))
    twin.advance_to(twin.start + 420)
    pods = replay_pods(twin)
    assert abs(reading(twin, "DCGM_FI_DEV_GPU_UTIL", pods["a"]) - 90) <= 5
    assert abs(reading(twin, "DCGM_FI_DEV_GPU_UTIL", pods["b"]) - 5) <= 5
    power = {ip: reading(twin, "DCGM_FI_DEV_POWER_USAGE", pod) for ip, pod in pods.items()}
    assert power["a"] > power["b"] + 200
    assert abs(reading(twin, "DCGM_FI_DEV_FB_USED", pods["b"]) - 20 * 1024) < 1


def test_a_pod_killed_mid_life_is_replaced_on_its_gpu(tmp_path: Path) -> None:
    twin = Twin(load_scenario(two_pods(tmp_path)))
    before = replay_pods(twin)["a"]
    twin.kube.fail_pod(NAMESPACE, before, "OOMKilled")
    twin.step()
    after = replay_pods(twin)["a"]
    assert after != before
    assert twin.kube.get_object("pods", NAMESPACE, after)["spec"]["nodeName"] == "gpu-node-001"


def test_more_recorded_pods_than_free_gpus_is_refused(tmp_path: Path) -> None:
    duty = [(0.0, 10.0, ip) for ip in ("a", "b", "c")]
    path = write_scenario(tmp_path, duty, duty, fleet="{nodes: 1, gpus_per_node: 2}")
    with pytest.raises(ScenarioError, match=r"replay: the recording has 3 pods.*has 2 GPUs free"):
        load_scenario(path)


# ---------------------------------------------------------------------------------------------- GenTD26


@pytest.mark.skipif(not (GENTD26 / "pod_gpu_duty_cycle.csv.gz").exists(), reason="GenTD26 data not present")
def test_gentd26_loads_eighty_replicas(tmp_path: Path) -> None:
    path = tmp_path / "gentd26.yaml"
    path.write_text(
        "name: g\nfleet: {nodes: 10, gpus_per_node: 8}\nduration: trace\nworkloads: []\nreplay:\n"
        f"  gpu_duty_cycle: {GENTD26 / 'pod_gpu_duty_cycle.csv.gz'}\n"
        f"  gpu_memory_used_bytes: {GENTD26 / 'pod_gpu_memory_used_bytes.csv.gz'}\n"
    )
    scenario = load_scenario(path)
    assert 22 * 3600 < scenario.duration < 24 * 3600
    twin = Twin(scenario)
    assert twin.book.replay is not None and len(twin.book.replay.sources) == 80
    assert 50 <= len(replay_pods(twin)) <= 80
    shipped = ROOT / "simulator" / "scenarios" / "replay" / "gentd26.yaml"
    if (shipped.parent / "../../../../shared/data/gentd26").resolve() == GENTD26.resolve():
        assert load_scenario(shipped).duration == scenario.duration
