"""Reading what nvidia-smi and dcgmi print: `--format=csv,noheader` queries and `dcgmi diag -j` JSON.

The formats are NVIDIA's documented ones: a CSV query prints one line per GPU or process, fields separated by
", ", nothing at all when there is no row; `dcgmi diag -j` prints one JSON document (DCGM 3: "DCGM GPU
Diagnostic" with per-GPU results carrying `gpu_ids`; DCGM 4: "DCGM Diagnostic" with `entity_group` and
`entity_id`), each test's results one of Pass, Fail, Skip, Warn."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class OutputError(ValueError):
    """A program printed something that is not the format asked for."""


@dataclass(frozen=True)
class ComputeApp:
    """One process on a GPU, as `--query-compute-apps=gpu_uuid,pid,process_name` lists it."""

    gpu_uuid: str
    pid: int
    name: str


@dataclass(frozen=True)
class DiagResult:
    """One diagnostic test's outcome on one GPU (gpu None: a test of the whole node, e.g. Deployment checks)."""

    category: str
    test: str
    gpu: int | None
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "Fail"

    def as_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"category": self.category, "test": self.test, "result": self.status}
        if self.gpu is not None:
            body["gpu"] = self.gpu
        if self.detail:
            body["message"] = self.detail[:500]
        return body


STATUSES = {"pass": "Pass", "fail": "Fail", "skip": "Skip", "warn": "Warn"}
BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")
POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def pod_uid_of(pid: int, proc_root: Path) -> str | None:
    """The Kubernetes pod a host process runs in, from its cgroup path (`kubepods.../pod<uid>...`, cgroupfs or
    systemd spelling), or None (not in a pod, gone, unreadable)."""
    try:
        text = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    match = POD_UID.search(text)
    return match.group(1).replace("_", "-") if match else None


def _rows(text: str, fields: int, what: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",", fields - 1)]
        if len(parts) != fields:
            raise OutputError(f"{what}: expected {fields} fields, got {line.strip()[:200]!r}")
        rows.append(parts)
    return rows


def gpu_uuids(text: str) -> dict[int, str]:
    """Index -> UUID from `nvidia-smi --query-gpu=index,uuid --format=csv,noheader`."""
    out = {}
    for index, uuid in _rows(text, 2, "nvidia-smi --query-gpu=index,uuid"):
        if "," in uuid or " " in uuid:
            raise OutputError(f"nvidia-smi --query-gpu=index,uuid: {uuid!r} is no GPU UUID")
        try:
            out[int(index)] = uuid
        except ValueError as exc:
            raise OutputError(f"nvidia-smi --query-gpu=index,uuid: {index!r} is no GPU index") from exc
    return out


def gpu_bus_ids(text: str) -> dict[int, tuple[str, str]]:
    """Index -> (UUID, PCI bus id) from `nvidia-smi --query-gpu=index,uuid,pci.bus_id --format=csv,noheader`."""
    out = {}
    for index, uuid, bus in _rows(text, 3, "nvidia-smi --query-gpu=index,uuid,pci.bus_id"):
        if not BUS_ID.fullmatch(bus):
            raise OutputError(f"nvidia-smi --query-gpu=index,uuid,pci.bus_id: {bus!r} is no PCI bus id")
        ((number, name),) = gpu_uuids(f"{index}, {uuid}").items()
        out[number] = (name, bus)
    return out


def compute_apps(text: str) -> list[ComputeApp]:
    """The processes from `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name --format=csv,noheader`."""
    apps = []
    for uuid, pid, name in _rows(text, 3, "nvidia-smi --query-compute-apps"):
        try:
            apps.append(ComputeApp(uuid, int(pid), name))
        except ValueError as exc:
            raise OutputError(f"nvidia-smi --query-compute-apps: {pid!r} is no process id") from exc
    return apps


def diag_results(text: str) -> list[DiagResult]:
    """Every test result in a `dcgmi diag -j` document (DCGM 3 or 4)."""
    try:
        doc = json.loads(text[text.find("{"):text.rfind("}") + 1] if "{" in text else text)
    except ValueError as exc:
        raise OutputError(f"dcgmi diag -j printed no JSON document: {text.strip()[:200]!r}") from exc
    body = doc.get("DCGM GPU Diagnostic") or doc.get("DCGM Diagnostic") if isinstance(doc, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("test_categories"), list):
        raise OutputError("dcgmi diag -j: no test_categories in its document")
    results = []
    for category in body["test_categories"]:
        for test in category.get("tests") or []:
            results += _test_results(str(category.get("category", "")), test)
    if not results:
        raise OutputError("dcgmi diag -j: the document holds no test results")
    return results


def _test_results(category: str, test: dict[str, Any]) -> list[DiagResult]:
    name = str(test.get("name", "?"))
    out = []
    for result in test.get("results") or []:
        status = STATUSES.get(str(result.get("status", "")).lower())
        if status is None:
            raise OutputError(f"dcgmi diag -j: test {name!r} has status {result.get('status')!r}")
        out.append(DiagResult(category, name, _gpu_of(result), status, _detail(result)))
    if not out and isinstance(test.get("test_summary"), dict):
        status = STATUSES.get(str(test["test_summary"].get("status", "")).lower(), "Skip")
        out.append(DiagResult(category, name, None, status))
    return out


def _gpu_of(result: dict[str, Any]) -> int | None:
    if "entity_id" in result and str(result.get("entity_group", "GPU")).upper() == "GPU":
        return int(result["entity_id"])
    for key in ("gpu_ids", "gpu_id"):
        value = result.get(key)
        if value is not None and str(value).strip().isdigit():
            return int(str(value).strip())
    return None


def _detail(result: dict[str, Any]) -> str:
    texts = []
    for key in ("warnings", "info"):
        value = result.get(key)
        items = value if isinstance(value, list) else [value] if value else []
        for item in items:
            texts.append(str(item.get("warning") or item.get("message") or item) if isinstance(item, dict)
                         else str(item))
    return "; ".join(texts)
