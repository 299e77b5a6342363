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

from connectors.kubernetes.errors import ClusterError, ClusterNotConfigured
from domain import ActionStatus
from entrypoints.commands.context import container_from, echo_json
from entrypoints.commands.credentials import TOKEN_ENV, authenticate, credential_options
from gpuops.decisions import RecordedDecision
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


def pending_action(container: Container, incident_id: int) -> int:
    """The one action of incident `incident_id` that waits for a decision; a ClickException listing them when
    there is none or more than one."""
    from gpuops.incidents.queries import get_incident

    with container.uow() as uow:
        try:
            incident = get_incident(uow.session, incident_id)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from exc
        actions = [(a.id, a.runbook, ", ".join(map(str, a.targets)), a.status) for a in incident.actions]
    waiting = [a for a in actions if a[3] == ActionStatus.AWAITING_APPROVAL]
    if len(waiting) == 1:
        return waiting[0][0]
    listed = "; ".join(f"#{i} {runbook} on {targets} ({status})" for i, runbook, targets, status in
                       (waiting or actions)) or "none"
    if waiting:
        raise click.ClickException(f"incident {incident_id} has {len(waiting)} actions waiting for a decision: "
                                   f"{listed}. Name one: gpuops approve ACTION_ID")
    raise click.ClickException(f"incident {incident_id} has no action waiting for a decision (its actions: "
                               f"{listed}); `gpuops incidents show {incident_id}` shows where it stands")


def refusal_help(role: str) -> str:
    """What to change when a person's role may not decide."""
    return (f"role {role}; deciding takes role approver or admin: change the user's role in GPUOPS_USERS, or use "
            f"{TOKEN_ENV} with a token of a user who has it")


def run_here(container: Container, context_factory: str | None) -> bool:
    """Whether this process can run the incident's next step itself: without a broker, and with a cluster to act
    on (a context factory brings its own). Otherwise the service's daemon or workers resume it."""
    if container.settings.broker_url is not None:
        return False
    if context_factory:
        return True
    try:
        container.cluster  # noqa: B018 -- connects, or says there is no cluster here
    except (ClusterNotConfigured, ConfigError):
        return False
    return True


def hand_on(container: Container, context_factory: str | None,
            start: Callable[[Pipeline], None]) -> list[str]:
    """Run `start` on a pipeline, then (when this process can) every step it handed on; what each said."""
    local = run_here(container, context_factory)
    pipeline, dispatcher = _pipeline(container, context_factory if local else None)
    start(pipeline)
    if dispatcher is None:  # the workers take it from the broker
        return []
    notes: list[str] = []
    if local:
        dispatcher.bind(lambda step, payload: notes.append(_run_step(pipeline, step, payload)))
        dispatcher.drain()
    elif dispatcher.pending:
        notes.append("no Kubernetes cluster is configured for this command, so the running gpuops service "
                     "(daemon or workers) carries the incident on")
    return notes


def _decide(ctx: click.Context, action_id: int | None, incident_id: int | None, decision: str, reason: str,
            plan_hash: str | None, context_factory: str | None, as_json: bool, credentials: dict[str, Any]) -> None:
    if (action_id is None) == (incident_id is None):
        raise click.UsageError("give either ACTION_ID or --incident N (the incident's one action waiting for a "
                               "decision)")
    container = container_from(ctx)
    person = authenticate(container, **credentials)
    if action_id is None:
        assert incident_id is not None
        action_id = pending_action(container, incident_id)
    who = person.name
    approver = Approver(identity=who, channel="cli", authorised=person.may_decide, channel_identity=person.via,
                        refused_because=refusal_help(person.role))
    recorded: list[RecordedDecision] = []

    def record(pipeline: Pipeline) -> None:
        recorded.append(pipeline.decide(action_id=action_id, approver=approver, decision=decision,
                                        plan_hash=plan_hash, reason=reason))

    try:
        # The decision stands whatever happens next; without a cluster here, the service resumes the incident.
        notes = hand_on(container, context_factory, record)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    incident_id, outcome = recorded[0].incident_id, recorded[0].outcome
    try:
        outcome.raise_for_refusal()
    except GpuopsError as exc:
        raise click.ClickException(str(exc)) from exc
    result: dict[str, Any] = {"action_id": action_id, "incident_id": incident_id, "decision": decision,
                              "status": outcome.status, "approvals": outcome.approvals,
                              "approvals_required": outcome.approvals_required, "duplicate": outcome.duplicate}
    if container.settings.broker_url is None:
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


INCIDENT_OPTION = click.option("--incident", "incident_id", type=click.IntRange(1), default=None,
                               help="Decide the one action of incident N that waits for a decision.")


@click.command("approve")
@click.argument("action_id", type=click.IntRange(1), required=False)
@INCIDENT_OPTION
@click.option("--reason", default="", help="Why (optional).")
@_common
@click.pass_context
def approve(ctx: click.Context, /, action_id: int | None, incident_id: int | None, reason: str,
            plan_hash: str | None, context_factory: str | None, as_json: bool, **credentials: Any) -> None:
    """Approve action ACTION_ID (or incident N's pending action) and resume its incident's agent thread (as an
    authenticated user)."""
    _decide(ctx, action_id, incident_id, "approve", reason, plan_hash, context_factory, as_json, credentials)


@click.command("reject")
@click.argument("action_id", type=click.IntRange(1), required=False)
@INCIDENT_OPTION
@click.option("--reason", required=True, help="Why the plan is rejected (goes to the audit trail).")
@_common
@click.pass_context
def reject(ctx: click.Context, /, action_id: int | None, incident_id: int | None, reason: str,
           plan_hash: str | None, context_factory: str | None, as_json: bool, **credentials: Any) -> None:
    """Reject action ACTION_ID (or incident N's pending action) as an authenticated user; the incident is
    escalated to a human, who may ask the agent to plan again (`gpuops incidents replan`)."""
    _decide(ctx, action_id, incident_id, "reject", reason, plan_hash, context_factory, as_json, credentials)


def register(group: click.Group) -> None:
    group.add_command(approve)
    group.add_command(reject)
