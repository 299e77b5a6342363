"""`gpuops approve ID` and `gpuops reject ID --reason …`: record a decision on an action, then resume the
incident's agent thread from this process (the checkpointer lives in the store's database)."""

from __future__ import annotations

import getpass
import importlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from connectors.kubernetes.errors import ClusterError
from gpuops.commands.context import container_from, echo_json
from gpuops.decisions import record_decision
from gpuops.errors import ConfigError, GpuopsError, NotFound
from gpuops.execution.approvals import Approver
from gpuops.wiring import Container

DEFAULT_CONTEXT = "gpuops.agent_wiring:context_from_container"
CONTEXT_HELP = ("module:function building the agent's context from the container, with which this process resumes "
                "the incident's graph (default: the wiring's cluster, catalogue and planners).")


def _load_factory(spec: str) -> Callable[[Container], Any]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise click.BadParameter(f"expected module:function, got {spec!r}", param_hint="--context-factory")
    try:
        factory: Callable[[Container], Any] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {spec!r}: {exc}", param_hint="--context-factory") from exc
    return factory


def _decide(ctx: click.Context, action_id: int, decision: str, identity: str | None, reason: str,
            plan_hash: str | None, context_factory: str | None, as_json: bool) -> None:
    container = container_from(ctx)
    who = identity or getpass.getuser()
    approver = Approver(identity=who, channel="cli", authorised=who in container.settings.approvers)
    try:
        recorded = record_decision(container, action_id=action_id, approver=approver, decision=decision,
                                   plan_hash=plan_hash, reason=reason)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    incident_id, outcome = recorded.incident_id, recorded.outcome
    try:
        outcome.raise_for_refusal()
    except GpuopsError as exc:
        raise click.ClickException(str(exc)) from exc
    result: dict[str, Any] = {"action_id": action_id, "incident_id": incident_id, "decision": decision,
                              "status": outcome.status, "approvals": outcome.approvals,
                              "approvals_required": outcome.approvals_required, "duplicate": outcome.duplicate}
    # The decision stands whatever happens next; without a cluster or a thread here, the agent picks the
    # thread up on its next run.
    from gpuops.agent_wiring import resume_incident  # the graph's libraries load only when a decision is made

    try:
        agent_ctx = _load_factory(context_factory or DEFAULT_CONTEXT)(container)
        report = resume_incident(container, incident_id, {"action_id": action_id, "decision": decision, "by": who},
                                 ctx=agent_ctx)
        result["agent"] = asdict(report)
    except (ConfigError, ClusterError, NotFound) as exc:
        result["agent_not_resumed"] = str(exc)
    if as_json:
        echo_json(result)
        return
    click.echo(f"action {action_id}: {decision} recorded by {who}; status {outcome.status} "
               f"({outcome.approvals}/{outcome.approvals_required} approvals)")
    if "agent_not_resumed" in result:
        click.echo(f"incident {incident_id}: not resumed here ({result['agent_not_resumed']}); the agent resumes "
                   "it on its next run")
    if "agent" in result:
        agent = result["agent"]
        held, waiting = agent.get("held") or {}, agent["waiting_for"] or {}
        state = (agent["outcome"] or (f"{held.get('runbook')} held until {held.get('hold_until')}" if held
                                      else f"waiting for a decision on action {waiting.get('action_id')}"))
        click.echo(f"incident {incident_id}: {state} {agent['reason']}".rstrip())


def _common(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--as", "identity", default=None, help="Who decides (default: the login name); must be "
                                                             "listed in GPUOPS_APPROVERS."),
        click.option("--plan-hash", default=None, help="The plan hash you reviewed (default: the stored one)."),
        click.option("--context-factory", envvar="GPUOPS_AGENT_CONTEXT", default=None, help=CONTEXT_HELP),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]):
        fn = option(fn)
    return fn


@click.command("approve")
@click.argument("action_id", type=int)
@click.option("--reason", default="", help="Why (optional).")
@_common
@click.pass_context
def approve(ctx: click.Context, action_id: int, reason: str, identity: str | None, plan_hash: str | None,
            context_factory: str | None, as_json: bool) -> None:
    """Approve action ACTION_ID and resume its incident's agent thread."""
    _decide(ctx, action_id, "approve", identity, reason, plan_hash, context_factory, as_json)


@click.command("reject")
@click.argument("action_id", type=int)
@click.option("--reason", required=True, help="Why the plan is rejected (goes to the audit trail).")
@_common
@click.pass_context
def reject(ctx: click.Context, action_id: int, reason: str, identity: str | None, plan_hash: str | None,
           context_factory: str | None, as_json: bool) -> None:
    """Reject action ACTION_ID; the incident is escalated to a human."""
    _decide(ctx, action_id, "reject", identity, reason, plan_hash, context_factory, as_json)


def register(group: click.Group) -> None:
    group.add_command(approve)
    group.add_command(reject)
