"""The twin's Kubernetes API as its own process, in wall-clock time (so a worker can be killed while the
twin keeps going): `python -m tests.kube_twin_process PORT`. Two nodes; a training deployment on
gpu-node-001 that takes CHECKPOINT seconds to confirm a checkpoint. GET /_twin/stopped lists every pod
stopped, with its reason, so a test can count evictions."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from simulator.kube.api import build_app
from simulator.kube.state import CHECKPOINT_SECONDS_ANNOTATION, KubeEvent, KubeState
from tests.runbook_twin import deployment

CHECKPOINT_S = "4"


def main(port: int) -> None:
    state = KubeState(time.time, pod_start_seconds=0.5, default_grace_seconds=0)
    state.add_node("gpu-node-001", 8)
    state.add_deployment(deployment("train", 1, 8, **{CHECKPOINT_SECONDS_ANNOTATION: CHECKPOINT_S}))
    for _ in range(5):
        state.tick(time.time())
    state.add_node("gpu-node-002", 8)
    stopped: list[dict[str, Any]] = []

    def record(event: KubeEvent) -> None:
        if event.kind == "pod_stopped":
            stopped.append({"pod": event.pod, "namespace": event.namespace, "node": event.node,
                            "detail": event.detail, "at": time.time()})

    state.subscribe(record)

    def tick() -> None:
        while True:
            state.tick(time.time())
            time.sleep(0.1)

    threading.Thread(target=tick, daemon=True).start()

    async def stopped_view(request: Request) -> JSONResponse:
        return JSONResponse(stopped)

    app = Starlette(routes=[Route("/_twin/stopped", stopped_view), Mount("/", build_app(state))])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main(int(sys.argv[1]))
