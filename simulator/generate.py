"""Random fault scenarios, one per seed, for `gpuops eval`: the library's scenarios were written with the
detectors and the planner in view; these were not. Each draws a fleet (3 to 20 nodes of 2, 4 or 8 GPUs), a
multi-node training job, an inference Deployment and sometimes notebooks and people cordoning nodes, a scrape
step, and two to four faults of any kind on distinct nodes at random times, with approval automatic.

    python -m simulator.generate --seeds 100-119 --out DIR
    gpuops eval --scenario DIR

The same seed always gives the same file."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, get_args

import yaml

from simulator.scenario import FABRIC_KINDS, NODE_LEVEL_KINDS, FaultKind, scenario_from_dict

KINDS: tuple[str, ...] = get_args(FaultKind)


def scenario(seed: int) -> dict[str, Any]:
    """The scenario of one seed, as a scenario file's mapping (validated)."""
    r = random.Random(seed)
    nodes, gpus, hours = r.choice([3, 5, 6, 8, 12, 20]), r.choice([2, 4, 8, 8]), r.choice([3, 4, 5])
    training = max(1, nodes // r.choice([2, 3]))
    spare = (nodes - training) * gpus
    workloads: list[dict[str, Any]] = [
        {"type": "training", "name": "train", "nodes": training, "intensity": round(r.uniform(0.7, 0.97), 2),
         "checkpoint_every": r.choice(["30m", "1h", "2h"])},
        {"type": "inference", "name": "serve", "replicas": max(1, int(spare * r.uniform(0.3, 0.6))),
         "peak_load": round(r.uniform(0.5, 0.85), 2)},
    ]
    if r.random() < 0.6:
        workloads.append({"type": "notebook", "name": "nb", "users": max(1, spare // 8)})
    faults = []
    for node in r.sample(range(1, nodes + 1), min(nodes, r.choice([2, 3, 4]))):
        kind = r.choice(KINDS)
        fault: dict[str, Any] = {"kind": kind, "node": f"gpu-node-{node:03d}",
                                 "at": f"{r.randrange(20, hours * 60 - 80)}m"}
        if kind in FABRIC_KINDS:
            fault["hca"] = r.randrange(gpus)
        elif kind not in NODE_LEVEL_KINDS:
            fault["gpu"] = r.randrange(gpus)
        faults.append(fault)
    data = {"name": f"generated-{seed}", "seed": seed, "fleet": {"nodes": nodes, "gpus_per_node": gpus},
            "duration": f"{hours}h", "step": r.choice(["10s", "15s", "15s", "30s"]), "workloads": workloads,
            "healthy": {} if r.random() < 0.7 else {"operations": {"human_cordons_per_day": 3}},
            "faults": faults, "approval": "auto_approve"}
    scenario_from_dict(data, source=f"seed {seed}")  # a draw the twin refuses is a bug here, not in the run
    return data


def _seeds(text: str) -> range:
    first, _, last = text.partition("-")
    try:
        return range(int(first), int(last or first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected a seed or a range such as 100-119") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=_seeds, required=True, help="a seed, or a range such as 100-119")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write generated-<seed>.yaml to")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        path = args.out / f"generated-{seed}.yaml"
        path.write_text(yaml.safe_dump(scenario(seed), sort_keys=False))
        print(path)


if __name__ == "__main__":
    main()
