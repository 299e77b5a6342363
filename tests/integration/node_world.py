"""The edge of a GPU node's world for the node agent's tests: small programs that answer exactly like nvidia-smi,
dcgmi and the host's reboot (their documented output formats, failures and a hang included), driven by a JSON
file the test edits, and the agent process itself (`gpuops node-agent`) run against the twin's API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
GPUOPS = str(Path(sys.executable).with_name("gpuops"))

COMMON = '''
import json, os, sys, time, urllib.request, zlib
WORLD = {world!r}
def world():
    with open(WORLD) as f:
        return json.load(f)
def note(*what):
    with open(WORLD + ".calls", "a") as f:
        f.write(" ".join(what) + "\\n")
def twin(path, method="GET"):
    w = world()
    req = urllib.request.Request(w["twin"] + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
def uuid(i):
    return "GPU-%08x-1111-2222-3333-%012x" % (zlib.crc32(WORLD.encode()), i)
def bus(i):
    return "00000000:%02X:00.0" % (0x18 + 0x10 * i)
def gpus():
    w = world()
    if w.get("twin"):
        return twin("/sim/nodes/%s/gpus" % w["node"])["gpus"]
    lost, fenced = set(w.get("lost", [])), set(w.get("fenced", []))
    present = [i for i in range(w.get("gpus", 8)) if i not in fenced]
    # `renumber`: NVML numbers the GPUs it sees, so with one fenced off the later ones move down an index; each
    # keeps its own UUID and bus id (`phys`)
    return [{{"index": k if w.get("renumber") else i, "phys": i, "healthy": i not in lost, "pods": []}}
            for k, i in enumerate(present)]
def phys(g):
    return g.get("phys", g["index"])
def uuid_of(g):
    return g.get("uuid") or uuid(phys(g))
'''

NVIDIA_SMI = COMMON + '''
args = sys.argv[1:]
note("nvidia-smi", *args)
w = world()
if w.get("driver_gone"):
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
          "latest NVIDIA driver is installed and running.")
    sys.exit(9)
index = int(args[args.index("-i") + 1]) if "-i" in args else None
if "--gpu-reset" in args:
    if w.get("reset_sleep"):
        time.sleep(w["reset_sleep"])
    if w.get("reset_error"):
        print("The following GPUs could not be reset:")
        print("  GPU %s: %s" % (bus(index), w["reset_error"]))
        print("")
        print("1 device is currently being used by one or more other processes (e.g., Fabric Manager, CUDA "
              "application, graphics application such as an X server, or a monitoring application such as "
              "another instance of nvidia-smi). Please first kill all processes using this device and all compute "
              "applications running in the system.")
        sys.exit(255)
    if w.get("twin"):
        twin("/sim/nodes/%s/gpus/%d/reset" % (w["node"], index), "POST")
    else:
        w["lost"] = [g for g in w.get("lost", []) if g != index]
        with open(WORLD, "w") as f:
            json.dump(w, f)
    print("GPU %s was successfully reset." % bus(index))
    print("All done.")
    sys.exit(0)
if args[:1] == ["drain"]:
    bus_id = args[args.index("-p") + 1]
    row = next((g for g in gpus() if bus(phys(g)) == bus_id), None)
    if row is None or args[args.index("-m") + 1] != "1":
        print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.")
        sys.exit(2)
    if w.get("drain_error"):
        print("Unable to set drain state for GPU %s: %s" % (bus_id, w["drain_error"]))
        sys.exit(3)
    if w.get("twin"):
        twin("/sim/nodes/%s/gpus/%d/fence" % (w["node"], row["index"]), "POST")
    else:
        w["fenced"] = sorted(set(w.get("fenced", [])) | {{phys(row)}})
        with open(WORLD, "w") as f:
            json.dump(w, f)
    print("Successfully set GPU %s drain state to: draining." % bus_id)
    sys.exit(0)
if "-pm" in args:
    print("Disabled persistence mode for GPU %s." % bus(index))
    print("All done.")
    sys.exit(0)
query = next((a.split("=", 1) for a in args if a.startswith("--query-")), None)
rows = gpus()
if query and query[0] == "--query-compute-apps":
    apps = list(w.get("apps", []))
    for g in rows:
        apps += [{{"gpu": g["index"], "pid": 10000 + n, "name": "python3"}} for n, _ in enumerate(g.get("pods", []))]
    named = {{phys(g): uuid_of(g) for g in rows}}  # an app names its GPU by its physical number
    for app in apps:
        print("%s, %d, %s" % (named.get(app["gpu"]) or uuid(app["gpu"]), app["pid"], app["name"]))
    sys.exit(0)
if query and query[0] == "--query-gpu":
    if index is not None:
        row = next((g for g in rows if g["index"] == index), None)
        if row is None:
            print("No devices were found")
            sys.exit(6)
        if not row["healthy"]:
            print("Unable to determine the device handle for GPU%s: GPU is lost.  Reboot the system to recover "
                  "this GPU" % bus(index)[4:])
            sys.exit(15)
        rows = [row]
    values = {{"index": lambda g: str(g["index"]), "uuid": uuid_of,
              "pci.bus_id": lambda g: bus(phys(g)), "name": lambda g: "NVIDIA H100 80GB HBM3"}}
    for g in rows:
        print(", ".join(values[f](g) for f in query[1].split(",")))
    sys.exit(0)
print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.")
sys.exit(2)
'''

DCGMI = COMMON + '''
args = sys.argv[1:]
note("dcgmi", *args)
w = world()
if args[:1] != ["diag"] or "-j" not in args:
    sys.exit(2)
if w.get("diag_hang"):
    time.sleep(3600)
if w.get("diag_error"):
    print("Error: unable to establish a connection to the specified host: localhost")
    print("Error: Unable to connect to host engine. Host engine connection invalid/disconnected.")
    sys.exit(255)
level = int(args[args.index("-r") + 1])
only = [int(g) for g in args[args.index("-i") + 1].split(",")] if "-i" in args else None
rows = [g for g in gpus() if only is None or g["index"] in only]
fail = {{int(k): v for k, v in w.get("diag_fail", {{}}).items()}}
for g in rows:
    if not g["healthy"]:
        fail.setdefault(g["index"], "Memory")
def per_gpu(test):
    out = []
    for g in rows:
        if fail.get(g["index"]) == test:
            out.append({{"gpu_ids": str(g["index"]), "status": "Fail",
                        "warnings": [{{"warning": "GPU %d: Memory test failed: DBE errors found" % g["index"],
                                      "error_id": 71, "error_category": 1, "error_severity": 3}}]}})
        else:
            out.append({{"gpu_ids": str(g["index"]), "status": "Pass"}})
    return out
tests = [
    {{"category": "Deployment", "tests": [
        {{"name": "Denylist", "results": [{{"status": "Pass"}}]}},
        {{"name": "NVML Library", "results": [{{"status": "Pass"}}]}},
        {{"name": "CUDA Main Library", "results": [{{"status": "Pass"}}]}},
        {{"name": "Permissions and OS Blocks", "results": [{{"status": "Pass"}}]}},
        {{"name": "Persistence Mode", "results": [{{"status": "Pass"}}]}},
        {{"name": "Environment Variables", "results": [{{"status": "Pass"}}]}},
        {{"name": "Page Retirement/Row Remap", "results": [{{"status": "Pass"}}]}},
        {{"name": "Graphics Processes", "results": [{{"status": "Pass"}}]}},
        {{"name": "Inforom", "results": [{{"status": "Skip"}}]}}]}},
]
if level >= 2:
    tests.append({{"category": "Integration", "tests": [{{"name": "PCIe", "results": per_gpu("PCIe")}}]}})
    tests.append({{"category": "Hardware", "tests": [{{"name": "GPU Memory", "results": per_gpu("Memory")}}]}})
doc = {{"DCGM GPU Diagnostic": {{"test_categories": tests}}, "version": "3.3.5"}}
print(json.dumps(doc, indent=4))
sys.exit(226 if fail else 0)
'''

REBOOT = COMMON + '''
note("reboot", *sys.argv[1:])
w = world()
if w.get("reboot_error"):
    print("Failed to talk to init daemon.", file=sys.stderr)
    sys.exit(1)
if w.get("twin"):
    twin("/sim/nodes/%s/reboot" % w["node"], "POST")
if w.get("reboot_kills_agent"):
    os.kill(os.getppid(), 9)  # the host goes down: the agent dies with it
'''


PLUGIN_RESTART = COMMON + '''
note("plugin-restart", *sys.argv[1:])
if world().get("plugin_error"):
    print("pkill: killing pid 4242 failed: Operation not permitted", file=sys.stderr)
    sys.exit(1)
'''


class NodeWorld:
    """A node's programs and the JSON file that drives them."""

    def __init__(self, root: Path, node: str, **state: Any) -> None:
        self.root, self.node = root, node
        root.mkdir(parents=True, exist_ok=True)
        self.file = root / "world.json"
        self.write(node=node, **state)
        self.programs = {}
        for name, text in (("nvidia-smi", NVIDIA_SMI), ("dcgmi", DCGMI), ("reboot", REBOOT),
                           ("plugin-restart", PLUGIN_RESTART)):
            path = root / name
            path.write_text(f"#!{sys.executable}\n" + text.format(world=str(self.file)))
            path.chmod(0o755)
            self.programs[name] = str(path)

    def write(self, **state: Any) -> None:
        current = json.loads(self.file.read_text()) if self.file.exists() else {}
        current.update(state)
        self.file.write_text(json.dumps(current))

    def uuid(self, gpu: int) -> str:
        """The UUID the node's nvidia-smi gives physical GPU `gpu` (whatever index it lists it at)."""
        return f"GPU-{zlib.crc32(str(self.file).encode()):08x}-1111-2222-3333-{gpu:012x}"

    def calls(self, prefix: str = "") -> list[str]:
        path = Path(str(self.file) + ".calls")
        lines = path.read_text().splitlines() if path.exists() else []
        return [line for line in lines if line.startswith(prefix)]


class AgentProcess:
    """`gpuops node-agent --node NODE` against the twin, its programs from a NodeWorld."""

    def __init__(self, url: str, world: NodeWorld, *extra: str, log: Path | None = None) -> None:
        self.args = [GPUOPS, "--log-level", "INFO", "node-agent", "--node", world.node, "--api-url", url,
                     "--nvidia-smi", world.programs["nvidia-smi"], "--dcgmi", world.programs["dcgmi"],
                     "--reboot-command", world.programs["reboot"],
                     "--plugin-restart-command", world.programs["plugin-restart"],
                     "--watch-timeout-s", "5", "--heartbeat-s", "1",
                     *extra]
        self.log = log or world.root / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        # the host's /proc of this node is an empty folder: the fake processes are in no pod
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GPUOPS_NODE_AGENT_PROC_ROOT": str(self.log.parent / "proc")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
