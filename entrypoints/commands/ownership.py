"""`gpuops incidents ack|assign|note|replan|resolve`, `gpuops silences create|list|expire` and `gpuops maintenance
create|list|end`: incident ownership and silences from the command line, through gpuops.incidents.ownership as an
authenticated dashboard user (the credentials `gpuops approve` takes). Listing needs no credentials, like `gpuops
incidents list`. The store and the domain load only when a command runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from entrypoints.commands.context import echo_json, settings_from, store_container
from entrypoints.commands.credentials import credential_options

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gpuops.incidents.ownership import Actor
    from gpuops.wiring import Container

T = TypeVar("T")
FAMILIES = ("xid", "gpu_lost", "ecc", "row_remap", "thermal", "nvlink", "pcie", "power", "straggler", "hung_job",
            "memory_leak", "node_not_ready", "overload", "fabric", "anomaly")  # domain.FindingKind, checked by a test
STATES = ("active", "pending", "expired")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _perform(ctx: click.Context, credentials: dict[str, Any], what: str, incident_id: int | None,
             change: Callable[[Session, Actor, datetime], T]) -> tuple[Container, Actor, T]:
    """Authenticate, then run `change` as that person; our errors become a clean exit saying what to do."""
    from domain import clock
    from entrypoints.commands.agent import refusal_help
    from entrypoints.commands.credentials import authenticate
    from gpuops.errors import GpuopsError
    from gpuops.incidents.ownership import Actor, perform

    container = store_container(ctx)
    person = authenticate(container, **credentials)
    actor = Actor(person.name, "cli", person.may_decide, refused_because=refusal_help(person.role))
    now = clock.now()
    try:
        result = perform(container.uow, actor, what=what, incident_id=incident_id,
                         change=lambda session: change(session, actor, now))
    except GpuopsError as exc:
        raise click.ClickException(f"{exc}; nothing was changed") from exc
    return container, actor, result


def _say(as_json: bool, value: dict[str, Any], line: str) -> None:
    if as_json:
        echo_json(value)
    else:
        click.echo(line)


# -- incidents ---------------------------------------------------------------------------------------------------


@click.command("ack")
@click.argument("incident_id", type=click.IntRange(1))
@JSON_OPTION
@credential_options
@click.pass_context
def ack(ctx: click.Context, /, incident_id: int, as_json: bool, **credentials: Any) -> None:
    """Acknowledge incident INCIDENT_ID as yourself."""
    from gpuops.incidents.ownership import acknowledge

    _, actor, change = _perform(ctx, credentials, "acknowledge incidents", incident_id,
                                lambda s, a, now: acknowledge(s, incident_id=incident_id, actor=a, now=now))
    _say(as_json, change.to_json(), f"incident {incident_id}: acknowledged by {actor.name}" if change.changed
         else f"incident {incident_id}: {change.detail}; nothing changed")


@click.command("assign")
@click.argument("incident_id", type=click.IntRange(1))
@click.argument("assignee", required=False)
@click.option("--unassign", is_flag=True, help="Assign the incident to nobody.")
@JSON_OPTION
@credential_options
@click.pass_context
def assign(ctx: click.Context, /, incident_id: int, assignee: str | None, unassign: bool, as_json: bool,
           **credentials: Any) -> None:
    """Assign incident INCIDENT_ID to ASSIGNEE (a dashboard user), or to nobody with --unassign."""
    from gpuops.incidents.ownership import assign as assign_to

    if (assignee is None) == (not unassign):
        raise click.UsageError("give a dashboard user to assign to, or --unassign")
    settings = settings_from(ctx)
    _, actor, change = _perform(
        ctx, credentials, "assign incidents", incident_id,
        lambda s, a, now: assign_to(s, incident_id=incident_id, assignee=assignee, actor=a, now=now,
                                    is_user=lambda name: settings.person_role(name) is not None))
    done = f"assigned to {change.assignee}" if change.assignee else "unassigned"
    _say(as_json, change.to_json(), f"incident {incident_id}: {done} by {actor.name}" if change.changed
         else f"incident {incident_id}: {change.detail}; nothing changed")


@click.command("note")
@click.argument("incident_id", type=click.IntRange(1))
@click.argument("text")
@JSON_OPTION
@credential_options
@click.pass_context
def note(ctx: click.Context, /, incident_id: int, text: str, as_json: bool, **credentials: Any) -> None:
    """Add TEXT as a note on incident INCIDENT_ID's timeline, signed with your name."""
    from gpuops.incidents.ownership import add_note

    _, actor, change = _perform(ctx, credentials, "add notes to incidents", incident_id,
                                lambda s, a, now: add_note(s, incident_id=incident_id, text=text, actor=a, now=now))
    _say(as_json, change.to_json(), f"incident {incident_id}: note added by {actor.name}")


@click.command("replan")
@click.argument("incident_id", type=click.IntRange(1))
@click.option("--reason", required=True, help="What the agent should know (goes to the planner and the audit).")
@click.option("--context-factory", envvar="GPUOPS_AGENT_CONTEXT", default=None,
              help="module:function building the agent's context (as for `gpuops approve`).")
@JSON_OPTION
@credential_options
@click.pass_context
def replan(ctx: click.Context, /, incident_id: int, reason: str, context_factory: str | None, as_json: bool,
           **credentials: Any) -> None:
    """After a rejection, ask the agent to plan incident INCIDENT_ID again: it is told what was rejected and why,
    never proposes a rejected step again, and its new plan goes through policy and approval."""
    from entrypoints.commands.agent import hand_on
    from gpuops.incidents.ownership import request_replan
    from gpuops.pipeline import Pipeline, Step

    container, actor, change = _perform(
        ctx, credentials, "ask the agent to plan again", incident_id,
        lambda s, a, now: request_replan(s, incident_id=incident_id, reason=reason, actor=a, now=now))

    def start(pipeline: Pipeline) -> None:
        pipeline.dispatcher.dispatch(Step.AGENT_STEP, {"incident_id": incident_id})

    notes = hand_on(container, context_factory, start)
    _say(as_json, {**change.to_json(), "agent": notes},
         "\n".join([f"incident {incident_id}: re-plan requested by {actor.name} ({change.detail})",
                    *(f"incident {incident_id}: {n}" for n in notes)]))


@click.command("resolve")
@click.argument("incident_id", type=click.IntRange(1))
@click.option("--reason", required=True, help="Why the incident is over (goes to the timeline and the audit).")
@JSON_OPTION
@credential_options
@click.pass_context
def resolve(ctx: click.Context, /, incident_id: int, reason: str, as_json: bool, **credentials: Any) -> None:
    """Resolve incident INCIDENT_ID by hand; its actions that have not run are expired."""
    from gpuops.incidents.ownership import resolve as resolve_incident
    from gpuops.incidents.ownership import tell_stopped

    container, actor, resolution = _perform(
        ctx, credentials, "resolve incidents", incident_id,
        lambda s, a, now: resolve_incident(s, incident_id=incident_id, reason=reason, actor=a, now=now))
    tell_stopped(container.notifier, resolution, actor.name)
    stopped = f"; stopped action(s) {', '.join(map(str, resolution.stopped))}" if resolution.stopped else ""
    _say(as_json, resolution.to_json(), f"incident {incident_id}: resolved by {actor.name}{stopped}"
         if resolution.change.changed else f"incident {incident_id}: already resolved; nothing changed")


def add_incident_commands(group: click.Group) -> None:
    """The ownership commands under `gpuops incidents` (the group lives in entrypoints.commands.store)."""
    for command in (ack, assign, note, replan, resolve):
        group.add_command(command)


# -- silences and maintenance windows ------------------------------------------------------------------------


def _iso(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time like 2026-12-04T18:00:00Z",
                                 param_hint=name) from exc
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone; add Z or +00:00", param_hint=name)
    return parsed


def _create(ctx: click.Context, kind: str, node: str | None, family: str | None, start: str | None, end: str | None,
            duration: str | None, reason: str, as_json: bool, credentials: dict[str, Any]) -> None:
    from gpuops.incidents.ownership import SilenceRequest, create_silence, silence_view

    ask = SilenceRequest(kind=kind, hostname=node, family=family, reason=reason, starts_at=_iso(start, "--start"),
                         ends_at=_iso(end, "--end"), duration=duration)
    what = "maintenance windows" if kind == "maintenance" else "silences"
    _, actor, view = _perform(ctx, credentials, f"create {what}", None,
                              lambda s, a, now: silence_view(create_silence(s, request=ask, actor=a, now=now), now))
    where = " ".join(f"{k}={v}" for k, v in (("node", view["hostname"]), ("family", view["family"])) if v)
    _say(as_json, view, f"{kind} {view['id']} created by {actor.name}: {where} from {view['starts_at'][:19]} "
                        f"until {view['ends_at'][:19]} UTC ({view['state']})")


def _list(ctx: click.Context, kind: str, state: str | None, limit: int, as_json: bool) -> None:
    from domain import clock
    from gpuops.incidents.ownership import list_silences, silence_view

    container = store_container(ctx)
    now = clock.now()
    with container.uow() as uow:
        rows = [silence_view(s, now) for s in list_silences(uow.session, now=now, kind=kind, state=state,
                                                            limit=limit)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no {kind}s" if kind == "silence" else "no maintenance windows")
        return
    click.echo(f"{'ID':>4}  {'STATE':<8}  {'NODE':<16}  {'FAMILY':<14}  {'FROM (UTC)':<19}  {'UNTIL (UTC)':<19}  "
               f"{'BY':<12}  REASON")
    for r in rows:
        by = r["created_by"] + (f" (ended by {r['expired_by']})" if r["expired_by"] else "")
        click.echo(f"{r['id']:>4}  {r['state']:<8}  {(r['hostname'] or 'any'):<16}  {(r['family'] or 'any'):<14}  "
                   f"{r['starts_at'][:19]:<19}  {r['ends_at'][:19]:<19}  {by:<12}  {r['reason']}")


def _expire(ctx: click.Context, kind: str, silence_id: int, as_json: bool, credentials: dict[str, Any]) -> None:
    from gpuops.incidents.ownership import expire_silence, silence_view

    def end(session: Session, actor: Actor, now: datetime) -> dict[str, Any]:
        silence, changed = expire_silence(session, silence_id=silence_id, actor=actor, now=now, kind=kind)
        return {**silence_view(silence, now), "changed": changed}

    what = "end maintenance windows" if kind == "maintenance" else "expire silences"
    _, actor, view = _perform(ctx, credentials, what, None, end)
    _say(as_json, view, f"{kind} {silence_id} ended by {actor.name}" if view["changed"]
         else f"{kind} {silence_id} had already ended at {view['ends_at'][:19]} UTC; nothing changed")


def _window_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = credential_options(fn)  # listed after the window's own options
    for option in reversed([
        click.option("--family", type=click.Choice(FAMILIES), default=None, help="Only findings of this kind."),
        click.option("--start", default=None, help="ISO 8601 start with a time zone (default: now)."),
        click.option("--end", default=None, help="ISO 8601 end with a time zone."),
        click.option("--duration", default=None, help="How long instead of --end: 90s, 15m, 2h, 1d, 1w."),
        click.option("--reason", required=True, help="Why (shown on the silences page and audited)."),
        JSON_OPTION,
    ]):
        fn = option(fn)
    return fn


LIST_OPTIONS = [click.option("--state", type=click.Choice(STATES), default=None, help="Only windows in this state."),
                click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10000)), JSON_OPTION]


def _list_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(LIST_OPTIONS):
        fn = option(fn)
    return fn


@click.group("silences")
def silences() -> None:
    """Silences: matching findings open no incident that pages (it opens suppressed)."""


@silences.command("create")
@click.option("--node", default=None, help="Only findings on this node.")
@_window_options
@click.pass_context
def silences_create(ctx: click.Context, /, node: str | None, family: str | None, start: str | None, end: str | None,
                    duration: str | None, reason: str, as_json: bool, **credentials: Any) -> None:
    """Silence findings of a node and/or a family for a while (--node, --family; --duration or --end)."""
    _create(ctx, "silence", node, family, start, end, duration, reason, as_json, credentials)


@silences.command("list")
@_list_options
@click.pass_context
def silences_list(ctx: click.Context, state: str | None, limit: int, as_json: bool) -> None:
    """Silences, newest first; expired ones stay listed, as history."""
    _list(ctx, "silence", state, limit, as_json)


@silences.command("expire")
@click.argument("silence_id", type=click.IntRange(1))
@JSON_OPTION
@credential_options
@click.pass_context
def silences_expire(ctx: click.Context, /, silence_id: int, as_json: bool, **credentials: Any) -> None:
    """End silence SILENCE_ID now."""
    _expire(ctx, "silence", silence_id, as_json, credentials)


@click.group("maintenance")
def maintenance() -> None:
    """Maintenance windows: gpuops takes no action on the node, and what it reports does not page."""


@maintenance.command("create")
@click.option("--node", required=True, help="The node under maintenance.")
@_window_options
@click.pass_context
def maintenance_create(ctx: click.Context, /, node: str, family: str | None, start: str | None, end: str | None,
                       duration: str | None, reason: str, as_json: bool, **credentials: Any) -> None:
    """Open a maintenance window on a node (--duration or --end)."""
    _create(ctx, "maintenance", node, family, start, end, duration, reason, as_json, credentials)


@maintenance.command("list")
@_list_options
@click.pass_context
def maintenance_list(ctx: click.Context, state: str | None, limit: int, as_json: bool) -> None:
    """Maintenance windows, newest first; ended ones stay listed, as history."""
    _list(ctx, "maintenance", state, limit, as_json)


@maintenance.command("end")
@click.argument("window_id", type=click.IntRange(1))
@JSON_OPTION
@credential_options
@click.pass_context
def maintenance_end(ctx: click.Context, /, window_id: int, as_json: bool, **credentials: Any) -> None:
    """End maintenance window WINDOW_ID now: gpuops may act on the node again."""
    _expire(ctx, "maintenance", window_id, as_json, credentials)


def register(group: click.Group) -> None:
    group.add_command(silences)
    group.add_command(maintenance)
