"""Benchmark of gpuops' autoscaling cycle live on the twin: GenTD26's request trace replayed as inference
Deployments (simulator/scenarios/replay/gentd26_serving.yaml: its 12 busiest base models over two weekdays), a
day of history under a reactive scaler, then a day of gpuops' production cycle every 15 s through the twin's
Kubernetes API and vLLM metrics; the same span replayed offline under gpuops' planner and reactive in the same
run. Once with the autoscaling policy's default scale-down cool-down and once with a short one, so what the
policy's cool-down costs reads as a ratio. Skipped without the trace (GPUOPS_GENTD26_DIR, else
../shared/data/gentd26 beside the repository).

Run with `python -m bench autoscale_live`; about 20 minutes on one core.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from threadpoolctl import threadpool_limits

from evaluation.autoscale.live import LiveInputs, run_live

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "simulator" / "scenarios" / "replay" / "gentd26_serving.yaml"
COOLDOWNS_S = (300.0, 60.0)


def run(results_dir: Path) -> dict[str, Any]:
    data_dir = Path(os.environ.get("GPUOPS_GENTD26_DIR", REPO.parent / "shared" / "data" / "gentd26"))
    requests, loads = data_dir / "requests.csv.gz", data_dir / "basemodel_update_latency.csv.gz"
    if not (requests.exists() and loads.exists()):
        result: dict[str, Any] = {"skipped": f"no GenTD26 trace in {data_dir}"}
    else:
        spec = yaml.safe_load(SCENARIO.read_text())
        spec["serving"]["replay"] |= {"requests": str(requests), "coldstarts": str(loads)}
        with tempfile.TemporaryDirectory() as folder, threadpool_limits(1):
            scenario = Path(folder) / SCENARIO.name
            scenario.write_text(yaml.safe_dump(spec))
            runs = [run_live(LiveInputs(scenario, history_s=86400.0, scale_down_cooldown_s=c)) for c in COOLDOWNS_S]
        result = {"runs": runs, "cores": 1}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "autoscale_live.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    out = run(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results")
    print(json.dumps(out, indent=2, sort_keys=True))
