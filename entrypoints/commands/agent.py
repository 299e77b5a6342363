"""`gpuops approve ID` and `gpuops reject ID --reason …`: a decision through the pipeline. Without a broker this
process then runs the incident's agent thread on (the checkpointer lives in the store's database), executes
what was approved and sends the next approval prompt; with one, the workers do. Only an authenticated dashboard
user whose role may decide is recorded as deciding (see entrypoints.commands.credentials)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import click

from connectors.kubernetes.errors import ClusterError
from entrypoints.commands.context import container_from, echo_json
from entrypoints.commands.credentials import authenticate, credential_options
from gpuops.errors import ConfigError, GpuopsError, NotFound
from gpuops.execution.approvals import Approver
from gpuops.pipeline import BrokerDispatcher, OrderedDispatcher, Pipeline, Step
from gpuops.wiring import Container

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


def _pipeline(container: Container, context_factory: str | None) -> tuple[Pipeline, OrderedDispatcher | None]:
    """With a broker, the decision's next step goes to the workers; without one, this process runs it (and
    whatever it hands on) before it exits."""
    s = container.settings
    if s.broker_url is not None:
        return Pipeline(container, BrokerDispatcher(s.broker_url)), None
    dispatcher = OrderedDispatcher(time.time)
    factory = _load_factory(context_factory) if context_factory else None
    pipeline = Pipeline(container, dispatcher, agent_context=factory)
    return pipeline, dispatcher


def _decide(ctx: click.Context, action_id: int, decision: str, reason: str, plan_hash: str | None,
            context_factory: str | None, as_json: bool, credentials: dict[str, Any]) -> None:
    container = container_from(ctx)
    person = authenticate(container, **credentials)
    who = person.name
    approver = Approver(identity=who, channel="cli", authorised=person.may_decide, channel_identity=person.via,
                        refused_because=f"role {person.role}; approver or admin may decide (GPUOPS_USERS)")
    pipeline, dispatcher = _pipeline(container, context_factory)
    try:
        recorded = pipeline.decide(action_id=action_id, approver=approver, decision=decision, plan_hash=plan_hash,
                                   reason=reason)
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
    # The decision stands whatever happens next; without a cluster here, the sweep or a later step resumes it.
    notes: list[str] = []
    if dispatcher is not None:
        dispatcher.bind(lambda step, payload: notes.append(_run_step(pipeline, step, payload)))
        dispatcher.drain()
        result["agent"] = notes
    if as_json:
        echo_json(result)
        return
    click.echo(f"action {action_id}: {decision} recorded by {who}; status {outcome.status} "
               f"({outcome.approvals}/{outcome.approvals_required} approvals)")
    for note in notes:
        click.echo(f"incident {incident_id}: {note}")


def _run_step(pipeline: Pipeline, step: Step, payload: dict[str, Any]) -> str:
    try:
        return str(pipeline.run(step, payload))
    except (ConfigError, ClusterError, NotFound) as exc:
        return f"not resumed here ({exc}); the agent resumes it on its next run"


def _common(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--plan-hash", default=None, help="The plan hash you reviewed (default: the stored one)."),
        click.option("--context-factory", envvar="GPUOPS_AGENT_CONTEXT", default=None, help=CONTEXT_HELP),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]):
        fn = option(fn)
    return credential_options(fn)


@click.command("approve")
@click.argument("action_id", type=int)
@click.option("--reason", default="", help="Why (optional).")
@_common
@click.pass_context
def approve(ctx: click.Context, /, action_id: int, reason: str, plan_hash: str | None, context_factory: str | None,
            as_json: bool, **credentials: Any) -> None:
    """Approve action ACTION_ID and resume its incident's agent thread (as an authenticated user)."""
    _decide(ctx, action_id, "approve", reason, plan_hash, context_factory, as_json, credentials)


@click.command("reject")
@click.argument("action_id", type=int)
@click.option("--reason", required=True, help="Why the plan is rejected (goes to the audit trail).")
@_common
@click.pass_context
def reject(ctx: click.Context, /, action_id: int, reason: str, plan_hash: str | None, context_factory: str | None,
           as_json: bool, **credentials: Any) -> None:
    """Reject action ACTION_ID (as an authenticated user); the incident is escalated to a human."""
    _decide(ctx, action_id, "reject", reason, plan_hash, context_factory, as_json, credentials)


def register(group: click.Group) -> None:
    group.add_command(approve)
    group.add_command(reject)
