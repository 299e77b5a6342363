"""`gpuops eval` without the command line: find and validate the scenarios, pick each one's planner, evaluate
them one by one, and write `report.json` and the plots."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.llm import LLMPlanner
from agent.planning import Planner
from agent.rules import RulesPlanner
from evaluation import plots
from evaluation.loop import PlannerFactory
from evaluation.report import EvalOptions, evaluate_scenario, overall
from evaluation.scripted_llm import out_of_scope_planner
from gpuops.config import Settings
from gpuops.errors import ConfigError
from gpuops.policy import PolicyConfig
from simulator.scenario import Scenario, ScenarioError
from simulator.scenario_files import load_scenario
from simulator.twin import Twin

SCENARIO_SUFFIXES = (".yaml", ".yml")


def scenario_files(path: Path) -> list[Path]:
    """The scenario file, or every *.yaml / *.yml in the folder (sorted); ScenarioError when there is none."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SCENARIO_SUFFIXES)
        if not files:
            raise ScenarioError(f"{path} holds no scenario files (*.yaml, *.yml)")
        return files
    if not path.exists():
        raise ScenarioError(f"scenario path {path} does not exist: give a scenario file or a folder of them")
    return [path]


def load_all(files: list[Path]) -> list[tuple[Path, Scenario]]:
    """Validate every file before running any, so a bad file fails in seconds, not after an hour."""
    return [(f, load_scenario(f)) for f in files]


def planner_factory(kind: str, settings: Settings) -> PlannerFactory:
    """The planner a scenario's run uses: rules, the configured LLM, or the scripted out-of-scope LLM."""
    if kind == "rules":
        return lambda twin: nullcontext(RulesPlanner())
    if kind == "llm":
        llm = LLMPlanner.from_settings(settings)
        if llm is None:
            raise ConfigError("--planner llm needs an LLM: set GPUOPS_LLM_MODEL and OPENAI_BASE_URL (or "
                              "OPENAI_API_KEY)")
        chosen: Planner = llm
        return lambda twin: nullcontext(chosen)
    if kind == "llm_out_of_scope":
        return lambda twin: _scripted(twin)
    raise ConfigError(f"unknown planner {kind!r}: expected rules, llm or llm_out_of_scope")


@contextmanager
def _scripted(twin: Twin) -> Iterator[Planner]:
    with out_of_scope_planner(twin.nodes) as planner:
        yield planner


@dataclass(frozen=True)
class EvalRequest:
    scenario: Path
    planner: str            # for scenarios that name none
    out: Path
    policy: PolicyConfig
    settings: Settings


def run_eval(request: EvalRequest, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Evaluate every scenario; write report.json and the PNG plots under `request.out`; return the report."""
    loaded = load_all(scenario_files(request.scenario))
    kinds = [scenario.planner or request.planner for _, scenario in loaded]
    factories = {kind: planner_factory(kind, request.settings) for kind in set(kinds)}  # fail before running
    request.out.mkdir(parents=True, exist_ok=True)
    reports = []
    for (path, scenario), kind in zip(loaded, kinds, strict=True):
        progress(f"{scenario.name}: {scenario.fleet.nodes} nodes, {scenario.duration / 3600:g} h, "
                 f"{len(scenario.faults)} faults, approval {scenario.approval}, planner {kind}")
        options = EvalOptions(planner=factories[kind], planner_name=kind, policy=request.policy)
        reports.append(evaluate_scenario(scenario, options, source=str(path)))
    report = overall(reports)
    written = [plots.gpu_hours(reports, request.out / "gpu_hours_lost.png")]
    for r in reports:
        timeline = plots.timeline(r, request.out / f"timeline-{r['scenario']}.png")
        if timeline is not None:
            written.append(timeline)
    report["plots"] = [p.name for p in written]
    (request.out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(v).removesuffix("_node") for v in value)
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def render(report: dict[str, Any]) -> str:
    """The terminal's tables: one row per fault, one per scenario, and the totals."""
    faults = [[f["scenario"], f["kind"], f["node"] + ("" if f["gpu"] is None else f"/{f['gpu']}"),
               "void" if f.get("void") else f["detected"],
               f["time_to_detect_s"], f["lead_time_s"], f["runbook_executed"], f["verified"],
               f["time_to_mitigate_s"], f["gpu_hours_lost"]["gpuops"], f["gpu_hours_lost"]["no_automation"],
               f["gpu_hours_lost"]["threshold_alerts"]] for f in report["faults"]]
    scenarios = [[s["scenario"], s["approval"], s["planner"], s["summary"]["faults"], s["summary"]["recall"],
                  s["summary"]["false_incidents"], s["summary"]["actions_executed"], s["summary"]["escalated"],
                  "{proposed}/{blocked}/{executed}".format(**s["summary"]["unsafe_actions"]),
                  s["summary"]["gpu_hours_lost"]["gpuops"], s["summary"]["gpu_hours_lost"]["no_automation"],
                  s["summary"]["gpu_hours_lost"]["threshold_alerts"], s["seconds"]] for s in report["scenarios"]]
    total = report["summary"]
    lines = _table(["scenario", "fault", "where", "detected", "ttd s", "lead s", "executed", "verified", "ttm s",
                    "GPU-h gpuops", "none", "threshold"], faults)
    lines += ["", *_table(["scenario", "approval", "planner", "faults", "recall", "false inc", "actions",
                           "escalated", "unsafe p/b/e", "GPU-h gpuops", "none", "threshold", "seconds"], scenarios)]
    hours, unsafe = total["gpu_hours_lost"], total["unsafe_actions"]
    void = f" (and {total['void_faults']} void: see report.json)" if total.get("void_faults") else ""
    lines += ["", f"{total['scenarios']} scenarios, {total['faults']} faults{void}: recall {_cell(total['recall'])}, "
                  f"{total['false_incidents']} false incidents, {total['actions_executed']} actions executed; "
                  f"unsafe actions proposed {unsafe['proposed']}, blocked {unsafe['blocked']}, executed "
                  f"{unsafe['executed']}; GPU-hours lost: gpuops {hours['gpuops']:g}, no automation "
                  f"{hours['no_automation']:g}, threshold alerts {hours['threshold_alerts']:g}; GPU-hours of nodes "
                  f"gpuops held out of service: {total['gpu_hours_held_out']:g}"]
    return "\n".join(lines)
