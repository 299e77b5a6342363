"""Generated scenarios: the same seed gives the same file, every draw is one the twin accepts, and the faults
land on distinct nodes of the fleet with what their kind needs (a GPU, an HCA, or neither)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.generate import main, scenario
from simulator.scenario import FABRIC_KINDS, NODE_LEVEL_KINDS, node_index
from simulator.scenario_files import load_scenario


def test_a_seed_gives_the_same_scenario_and_seeds_differ() -> None:
    assert scenario(7) == scenario(7)
    assert len({str(scenario(s)) for s in range(20)}) == 20


@pytest.mark.parametrize("seed", range(40))
def test_every_draw_is_a_valid_scenario_with_faults_on_distinct_nodes(seed: int) -> None:
    data = scenario(seed)
    nodes, gpus = data["fleet"]["nodes"], data["fleet"]["gpus_per_node"]
    where = [f["node"] for f in data["faults"]]
    assert len(set(where)) == len(where) and all(node_index(n) < nodes for n in where)
    for fault in data["faults"]:
        if fault["kind"] in FABRIC_KINDS:
            assert 0 <= fault["hca"] < gpus and "gpu" not in fault
        elif fault["kind"] in NODE_LEVEL_KINDS:
            assert "gpu" not in fault and "hca" not in fault
        else:
            assert 0 <= fault["gpu"] < gpus


def test_the_command_writes_files_gpuops_eval_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--seeds", "3-5", "--out", str(tmp_path)])
    written = sorted(tmp_path.glob("*.yaml"))
    assert [p.name for p in written] == ["generated-3.yaml", "generated-4.yaml", "generated-5.yaml"]
    assert load_scenario(written[0]).name == "generated-3"
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    with pytest.raises(SystemExit):
        main(["--seeds", "a-b", "--out", str(tmp_path)])
