"""The node agent: carries out its own node's GPUReset, GPUFence, NodeReboot and NodeValidation requests
(runbooks/NODE_AGENT.md) and reports in their status.

A request is taken once: the agent claims it by writing `Running` with the resourceVersion it read, so a second
agent, or this one restarted, loses the race with a 409 and leaves it alone. Phases only move forward, and a
final phase is never written over. While it works on a request the agent renews its `heartbeatTime`. A request
left `Running` by an agent that is gone (killed, or the node rebooted) is ended once, at start and on a sweep
every heartbeat: a reboot Succeeded as soon as the node's boot id differs from the one recorded when it was
taken; otherwise, once its heartbeat is three beats old, a reboot Failed (the same boot: it did not happen), a
reset or a validation Failed (their outcome died with the process; gpuops asks again if it still wants one).
The heartbeat keeps a second agent briefly running beside the first (a rollout) from ending live work."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.kubernetes.errors import ClusterError, Conflict, NotFound
from connectors.kubernetes.node_requests import KINDS, NodeRequestsPort, RequestObject, WatchExpired
from gpuops.nodeagent import nvidia
from gpuops.nodeagent.commands import CommandResult, command_line, run_command
from gpuops.nodeagent.settings import NodeAgentSettings

log = logging.getLogger(__name__)
Runner = Callable[..., CommandResult]
Outcome = tuple[str, str, dict[str, Any]]  # final phase, message, extra status fields


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    """One node's agent. `run(stop)` recovers, then watches and carries out requests one at a time (a reset never
    runs during a diagnostic on the same node)."""

    def __init__(
        self,
        *,
        node: str,
        requests: NodeRequestsPort,
        settings: NodeAgentSettings,
        agent_id: str = "",
        clock: Callable[[], float] = time.time,
        run: Runner = run_command,
    ) -> None:
        self.node = node
        self.requests = requests
        self.settings = settings
        self.agent_id = agent_id or node
        self._clock = clock
        self._run = run
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._working: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- the loop

    def run(self, stop: threading.Event) -> None:
        """Recover, then serve until `stop` is set. An API server not answering yet is waited for."""
        while not stop.is_set():
            try:
                self.recover()
                break
            except ClusterError as exc:
                log.warning("cannot read this node's requests yet (%s); again in %gs", exc, self.settings.retry_s)
                stop.wait(self.settings.retry_s)
        for kind in KINDS:
            threading.Thread(target=self._watch, args=(kind, stop), name=f"watch-{kind}", daemon=True).start()
        threading.Thread(target=self._beat, args=(stop,), name="heartbeat", daemon=True).start()
        next_sweep = self._clock() + self.settings.heartbeat_s
        while not stop.is_set():
            try:
                kind, name = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._clock() >= next_sweep:
                    next_sweep = self._clock() + self.settings.heartbeat_s
                    self._sweep()
                continue
            try:
                self.handle(kind, name)
            except ClusterError as exc:
                log.warning("%s %s: %s; it is taken up again on the next event", kind, name, exc)

    def _sweep(self) -> None:
        try:
            self.recover()
        except ClusterError as exc:
            log.warning("looking for abandoned requests failed: %s", exc)

    def _beat(self, stop: threading.Event) -> None:
        """Renew the heartbeat of what this agent works on (a reboot: until the host takes the agent down)."""
        while not stop.wait(self.settings.heartbeat_s):
            with self._lock:
                working = sorted(self._working)
            for kind, name in working:
                try:
                    with self._lock:
                        if (kind, name) in self._working:
                            self.requests.write_status(kind, name, {"heartbeatTime": rfc3339(self._clock())})
                except ClusterError as exc:
                    log.warning("heartbeat of %s %s failed: %s", kind, name, exc)

    def _watch(self, kind: str, stop: threading.Event) -> None:
        """List the node's requests of one kind, then watch from the list's resourceVersion; list again on 410."""
        version = ""
        while not stop.is_set():
            try:
                if not version:
                    items, version = self.requests.list_requests(kind, self.node)
                    for item in items:
                        self._offer(item)
                for _event, obj in self.requests.watch_requests(
                    kind, self.node, version, self.settings.watch_timeout_s
                ):
                    version = obj.resource_version or version
                    self._offer(obj)
                    if stop.is_set():
                        return
            except WatchExpired:
                log.info("watch of %s expired; listing again", kind)
                version = ""
                stop.wait(0.1)  # never a hot loop against a server that keeps answering 410
            except ClusterError as exc:
                log.warning("watch of %s failed (%s); again in %gs", kind, exc, self.settings.retry_s)
                version = ""
                stop.wait(self.settings.retry_s)

    def _offer(self, obj: RequestObject) -> None:
        if obj.node == self.node and obj.phase == "Pending":
            self._queue.put((obj.kind, obj.name))

    # ---------------------------------------------------------------- start

    def recover(self) -> list[RequestObject]:
        """End, once, each request of this node that an agent now gone left Running."""
        ended = []
        for kind in KINDS:
            items, _ = self.requests.list_requests(kind, self.node)
            for item in items:
                with self._lock:
                    ours = (item.kind, item.name) in self._working
                if item.node != self.node or item.phase != "Running" or ours:
                    continue
                outcome = self._interrupted(item)
                done = None if outcome is None else self._finish(item, *outcome)
                if done is not None:
                    ended.append(done)
        return ended

    def _silent(self, item: RequestObject) -> bool:
        """Whether the request's heartbeat (or its start) is three beats old: the agent on it is gone."""
        stamp = str(item.status.get("heartbeatTime") or item.status.get("startTime") or "")
        try:
            last = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return True
        return self._clock() - last > 3 * self.settings.heartbeat_s

    def _interrupted(self, item: RequestObject) -> Outcome | None:
        if item.kind == "NodeReboot":
            before, now = str(item.status.get("bootID") or ""), self.requests.boot_id(self.node)
            if before and now and now != before:
                return "Succeeded", f"node {self.node} rebooted: boot id {before} -> {now}", {}
        if not self._silent(item):
            return None
        if item.kind == "NodeReboot":
            return "Failed", (
                f"the node agent restarted in the same boot ({now or 'unknown boot id'}): the reboot did not "
                "happen; gpuops creates a new request if it still wants one"
            ), {}
        what = {"GPUReset": "reset", "GPUFence": "fence"}.get(item.kind, "diagnostic")
        return "Failed", (
            f"the node agent stopped while the {what} ran; its outcome is unknown and it is not repeated "
            "(gpuops creates a new request if it still wants one)"
        ), {}

    # ---------------------------------------------------------------- one request

    def handle(self, kind: str, name: str) -> RequestObject | None:
        """Carry out one request if it is this node's and still Pending; the request as it ended (or None)."""
        try:
            current = self.requests.get_request(kind, name)
        except NotFound:
            return None
        if current.node != self.node or current.phase != "Pending":
            return None
        extra: dict[str, Any] = {}
        if kind == "NodeReboot":
            extra["bootID"] = self.requests.boot_id(self.node)
        claimed = self._claim(current, extra)
        if claimed is None:
            return None
        with self._lock:
            self._working.add((kind, name))
        try:
            if kind == "GPUReset":
                outcome: Outcome | None = self._reset(claimed)
            elif kind == "GPUFence":
                outcome = self._fence(claimed)
            elif kind == "NodeReboot":
                outcome = self._reboot(claimed)
            else:
                outcome = self._validate(claimed)
        except BaseException:
            self._done_with(kind, name)
            raise
        if outcome is not None:  # a reboot under way is beaten for until the host takes the agent down
            self._done_with(kind, name)
        if outcome is None:
            return claimed
        return self._finish(claimed, *outcome)

    def _done_with(self, kind: str, name: str) -> None:
        with self._lock:  # waits out a heartbeat being written: none lands after the final phase
            self._working.discard((kind, name))

    def _claim(self, request: RequestObject, extra: Mapping[str, Any]) -> RequestObject | None:
        stamp = rfc3339(self._clock())
        status = {"phase": "Running", "message": f"taken by {self.agent_id}", "agent": self.agent_id,
                  "startTime": stamp, "heartbeatTime": stamp, **extra}
        try:
            return self.requests.write_status(
                request.kind, request.name, status, resource_version=request.resource_version
            )
        except Conflict:
            log.info("%s %s changed before this agent took it; left to whoever did", request.kind, request.name)
            return None

    def _finish(self, request: RequestObject, phase: str, message: str,
                extra: Mapping[str, Any] | None = None) -> RequestObject | None:
        """Write the final phase unless the request already has one (a phase is never written over)."""
        status = {"phase": phase, "message": message[:1000], "completionTime": rfc3339(self._clock()),
                  **(extra or {})}
        for _ in range(3):
            current = self.requests.get_request(request.kind, request.name)
            if current.finished:
                return None
            try:
                done = self.requests.write_status(
                    request.kind, request.name, status, resource_version=current.resource_version
                )
            except Conflict:
                continue
            log.info("%s %s %s: %s", request.kind, request.name, phase, message)
            return done
        raise Conflict(f"{request.kind} {request.name} kept changing; its end was not written")

    def _command(self, line: str, *args: str, timeout_s: float) -> CommandResult:
        return self._run([*command_line(line), *args], timeout_s=timeout_s)

    # ---------------------------------------------------------------- GPUReset

    def _free_gpu(self, request: RequestObject, doing: str, missing: str = "") -> tuple[int, str, str] | str:
        """The request's GPU (index, UUID, PCI bus id) when nvidia-smi lists it and no process holds it; else why
        the request fails. A request that names the GPU's UUID (`spec.uuid`, as the telemetry named it) is for that
        GPU only: NVML numbers the GPUs it sees, so once one is fenced off or falls off the bus the others' indices
        may shift, and index `gpu` may now be another GPU. Then nothing is done, and the message says where the
        named GPU is now, if anywhere."""
        gpu, named = request.spec.get("gpu"), request.spec.get("uuid")
        if not isinstance(gpu, int) or gpu < 0:
            return f"spec.gpu must be a GPU index, got {gpu!r}"
        if named is not None and (not isinstance(named, str) or not named.strip()):
            return f"spec.uuid must be a GPU UUID, got {named!r}"
        listing = self._command(self.settings.nvidia_smi, "--query-gpu=index,uuid,pci.bus_id",
                                "--format=csv,noheader", timeout_s=self.settings.query_timeout_s)
        if not listing.ok:
            return f"nvidia-smi cannot list the GPUs: {listing.last_line()}"
        try:
            gpus = nvidia.gpu_bus_ids(listing.stdout)
        except nvidia.OutputError as exc:
            return str(exc)
        if named is not None and (gpu not in gpus or gpus[gpu][0] != named):
            now = next((index for index, (uuid, _) in gpus.items() if uuid == named), None)
            if now is not None:
                return f"node {self.node} renumbered its GPUs: {named} is GPU {now} now, not GPU {gpu}; nothing done"
            held = f"GPU {gpu} is {gpus[gpu][0]}" if gpu in gpus else f"it has no GPU {gpu}"
            return f"node {self.node} lists no GPU {named}{missing} ({held}); nothing done"
        if gpu not in gpus:
            return f"node {self.node} has no GPU {gpu}{missing}"
        return self._holders(gpu, gpus[gpu][0], doing) or (gpu, *gpus[gpu])

    def _reset(self, request: RequestObject) -> Outcome:
        found = self._free_gpu(request, "resetting it")
        if isinstance(found, str):
            return "Failed", found, {}
        gpu, uuid, _ = found
        smi, timeout = self.settings.nvidia_smi, self.settings.query_timeout_s
        reset = self._command(smi, "--gpu-reset", "-i", str(gpu), timeout_s=self.settings.reset_timeout_s)
        if not reset.ok:
            return "Failed", f"nvidia-smi --gpu-reset -i {gpu} failed: {reset.last_line()}", {}
        check = self._command(smi, "-i", str(gpu), "--query-gpu=index,uuid,pci.bus_id", "--format=csv,noheader",
                              timeout_s=timeout)
        try:
            answers = check.ok and any(int(r.split(",")[0]) == gpu for r in check.stdout.splitlines() if r.strip())
        except ValueError:
            answers = False
        if not answers:
            return "Failed", f"GPU {gpu} was reset but does not answer: {check.last_line()}", {}
        return "Succeeded", f"GPU {gpu} ({uuid}) on {self.node} reset; it answers again", {}

    # ---------------------------------------------------------------- GPUFence

    def _fence(self, request: RequestObject) -> Outcome:
        """Take one GPU from the device plugin until the driver reloads: no pod may hold it; persistence mode off
        (the driver requires it), the GPU into the driver's drain state (`nvidia-smi drain`: NVML hides it from
        every process that starts after), then the device plugin restarted, so it lists the node's GPUs without it
        and the kubelet lowers the node's allocatable."""
        found = self._free_gpu(request, "fencing it off", " (or it is fenced off already)")  # NVML hides those
        if isinstance(found, str):
            return "Failed", found, {}
        gpu, uuid, bus = found
        smi, timeout = self.settings.nvidia_smi, self.settings.query_timeout_s
        steps = ((("-i", str(gpu), "-pm", "0"), f"nvidia-smi -i {gpu} -pm 0"),
                 (("drain", "-p", bus, "-m", "1"), f"nvidia-smi drain -p {bus} -m 1"))
        for args, said in steps:
            done = self._command(smi, *args, timeout_s=timeout)
            if not done.ok:
                return "Failed", f"{said} failed: {done.last_line()}", {}
        restart = self._command(self.settings.plugin_restart_command, timeout_s=timeout)
        if not restart.ok:
            return "Failed", (f"GPU {gpu} ({bus}) is drained, but the device plugin could not be restarted: "
                              f"{restart.last_line()}; it may still offer the GPU"), {}
        return "Succeeded", (f"GPU {gpu} ({uuid}, {bus}) on {self.node} drained and the device plugin restarted: "
                             "it is not given to pods until the node reboots"), {"bus": bus}

    def _holders(self, gpu: int, uuid: str, doing: str) -> str:
        """Why the GPU cannot be touched now (the processes on it, or a failed listing); empty when it is free."""
        apps = self._command(self.settings.nvidia_smi, "--query-compute-apps=gpu_uuid,pid,process_name",
                             "--format=csv,noheader", timeout_s=self.settings.query_timeout_s)
        if not apps.ok:
            return f"nvidia-smi cannot list the compute processes: {apps.last_line()}"
        try:
            holders = [a for a in nvidia.compute_apps(apps.stdout) if a.gpu_uuid == uuid]
        except nvidia.OutputError as exc:
            return str(exc)
        if holders:
            named = ", ".join(self._holder(a) for a in holders)
            return f"GPU {gpu} ({uuid}) on {self.node} is in use by {named}; evict the pods using it before {doing}"
        return ""

    def _holder(self, app: nvidia.ComputeApp) -> str:
        pod = nvidia.pod_uid_of(app.pid, Path(self.settings.proc_root))
        return f"pid {app.pid} ({app.name}{f', pod uid {pod}' if pod else ''})"

    # ---------------------------------------------------------------- NodeReboot

    def _reboot(self, request: RequestObject) -> Outcome | None:
        result = self._command(self.settings.reboot_command, timeout_s=self.settings.reboot_timeout_s)
        if not result.ok:
            return "Failed", f"the reboot command failed: {result.last_line()}", {}
        log.info("%s: reboot started at boot id %s; the next agent on %s ends the request",
                 request.name, request.status.get("bootID"), self.node)
        return None

    # ---------------------------------------------------------------- NodeValidation

    def _validate(self, request: RequestObject) -> Outcome:
        level = request.spec.get("level", self.settings.diag_level)
        if not isinstance(level, int) or not 1 <= level <= 4:
            return "Failed", f"spec.level must be 1 to 4, got {level!r}", {}
        gpus = request.spec.get("gpus") or []
        args = ["diag", "-r", str(level), "-j"]
        if gpus:
            args += ["-i", ",".join(str(g) for g in gpus)]
        result = self._command(self.settings.dcgmi, *args, timeout_s=self.settings.diag_timeout_s)
        if result.timed_out or result.missing:
            return "Failed", f"dcgmi diag -r {level}: {result.last_line()}", {}
        try:
            results = nvidia.diag_results(result.stdout)
        except nvidia.OutputError as exc:
            return "Failed", f"dcgmi diag -r {level} could not run: {result.last_line()} ({exc})", {}
        return "Succeeded", verdict_line(level, results), {
            "passed": all(r.passed for r in results),
            "level": level,
            "results": [r.as_status() for r in results],
            "failedTests": failed_tests(results),
        }


def failed_tests(results: Sequence[nvidia.DiagResult]) -> list[str]:
    """'Test (GPU n)' for each failed result."""
    return [f"{r.test}{'' if r.gpu is None else f' (GPU {r.gpu})'}" for r in results if not r.passed]


def verdict_line(level: int, results: Sequence[nvidia.DiagResult]) -> str:
    failed = failed_tests(results)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("Pass", "Warn", "Skip", "Fail")}
    seen = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    if failed:
        return f"dcgmi diag -r {level}: failed ({seen}): {', '.join(failed)}"
    return f"dcgmi diag -r {level}: passed ({seen})"
