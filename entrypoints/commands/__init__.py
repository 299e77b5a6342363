"""Command modules: each exposes `register(group)` and adds its commands to the `gpuops` group.

`COMMANDS` names every top-level command with the module that registers it and its one-line help, so `gpuops
--help` lists them without importing any, and `gpuops X` imports only X's module (a test checks the table
against what the modules register)."""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "db": Command("store", "Database schema migrations (Alembic)."),
    "incidents": Command("store", "Inspect incidents; acknowledge, assign, note, re-plan or resolve one."),
    "api": Command("web", "Serve the dashboard, the JSON API, /healthz and /metrics."),
    "demo": Command("web", "The whole system on embedded defaults: the simulated fleet, the rules planner, the "
                           "dashboard."),
    "nab": Command("nab", "Score a detector on a Numenta Anomaly Benchmark corpus."),
    "sim": Command("sim", "Run the fleet twin: dcgm-exporter /metrics and a Kubernetes API, or a batch file."),
    "backtest": Command("backtest", "Replay a stored time range through the detectors and write the findings."),
    "approve": Command("agent", "Approve an action and resume its incident's agent thread."),
    "reject": Command("agent", "Reject an action; the incident is escalated to a human."),
    "cluster": Command("cluster", "Read the Kubernetes cluster the way gpuops sees it."),
    "models": Command("models", "Versioned detector models (the learned risk model)."),
    "daemon": Command("daemon", "Embedded all-in-one: cycles, incidents, agent, execution and the API."),
    "worker": Command("daemon", "Run a Celery worker on GPUOPS_BROKER_URL."),
    "beat": Command("daemon", "Send each shard's detection cycle, and the sweeps, on schedule."),
    "users": Command("users", "Dashboard users, their roles and their API tokens."),
    "policy": Command("policy", "The policy layer's own state: the circuit breaker."),
    "eval": Command("eval", "Run the whole loop on scenario files and report recall, safety and GPU-hours."),
    "bench": Command("bench", "Run the benchmarks and write their figures to bench/results/*.json."),
    "audit": Command("audit", "The audit trail's hash chain."),
    "node-agent": Command("node_agent", "Carry out this node's GPU resets, reboots and validations."),
    "autoscale": Command("autoscale", "Predictive autoscaling of inference deployments."),
    "silences": Command("ownership", "Silences: matching findings open no incident that pages."),
    "maintenance": Command("ownership", "Maintenance windows: no action on the node, its effects do not page."),
    "tickets": Command("tickets", "Hardware (RMA) tickets for the nodes gpuops keeps out of service."),
}

COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(c.module for c in COMMANDS.values()))
