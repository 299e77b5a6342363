from __future__ import annotations

import io
import json
import logging

from gpuops.logs import configure_logging, log_context


def test_json_lines_carry_incident_and_action_ids() -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    log = logging.getLogger("gpuops.test")
    with log_context(incident_id=41):
        log.info("incident opened")
        with log_context(action_id=7):
            log.warning("draining %s", "gpu-node-003", extra={"node": "gpu-node-003"})
    log.info("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["incident_id"] == 41 and "action_id" not in lines[0]
    assert lines[1] == {**lines[1], "incident_id": 41, "action_id": 7, "node": "gpu-node-003",
                        "msg": "draining gpu-node-003", "level": "WARNING"}
    assert "incident_id" not in lines[2]


def test_text_format_is_readable_and_keeps_context() -> None:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream)
    with log_context(incident_id=3):
        logging.getLogger("gpuops.test").info("hello")
    line = stream.getvalue().strip()
    assert "INFO" in line and "gpuops.test: hello" in line and "incident_id=3" in line
    assert not line.startswith("{")
