"""`gpuops tickets list` and `gpuops tickets repaired NODE`: the hardware (RMA) tickets gpuops opened (for nodes it
keeps out of service, and for parts a node serves on without), and the technicians' word that a node was
repaired. A repaired node is not put back at once: it starts a fresh probation and returns to service only
through the same checks as after any remediation. Marking a node repaired needs an authenticated approver or
admin; it is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from entrypoints.commands.context import echo_json, store_container
from entrypoints.commands.credentials import authenticate, credential_options


@click.group("tickets")
def tickets() -> None:
    """Hardware (RMA) tickets for the nodes gpuops keeps out of service."""


@tickets.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the tickets already repaired.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_command(ctx: click.Context, /, show_all: bool, as_json: bool) -> None:
    """The hardware tickets, newest first (open ones only unless --all)."""
    from sqlalchemy import select

    from gpuops.store.models import HardwareTicket

    container = store_container(ctx)
    with container.uow() as uow:
        stmt = select(HardwareTicket).order_by(HardwareTicket.id.desc())
        if not show_all:
            stmt = stmt.where(HardwareTicket.status == "open")
        rows = [{"id": t.id, "node": t.hostname, "gpu": t.gpu, "status": t.status, "summary": t.summary,
                 "incident_id": t.incident_id, "opened_at": t.created_at.isoformat(),
                 **({"repaired_by": t.evidence["repaired_by"]} if "repaired_by" in t.evidence else {})}
                for t in uow.session.scalars(stmt)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no open hardware tickets" if not show_all else "no hardware tickets")
    for r in rows:
        gpu = "" if r["gpu"] is None else f" GPU {r['gpu']}"
        click.echo(f"#{r['id']}  {r['status']:8}  {r['node']}{gpu}  opened {r['opened_at']}  incident "
                   f"{r['incident_id']}: {r['summary']}")


@tickets.command("repaired")
@click.argument("node")
@click.option("--note", default="", help="What was done (goes to the incident's timeline and the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@credential_options
@click.pass_context
def repaired_command(ctx: click.Context, /, node: str, note: str, as_json: bool, **credentials: Any) -> None:
    """NODE was repaired: close its tickets; it returns to service after a fresh probation passes."""
    from gpuops.execution.probation import NotKeptOut, mark_repaired
    from gpuops.store.audit import append_event

    container = store_container(ctx)
    person = authenticate(container, **credentials)
    now = datetime.now(tz=UTC)
    with container.uow() as uow:
        if not person.may_decide:
            append_event(uow.session, actor=person.name, kind="tickets.repaired_refused", data={"node": node}, ts=now)
            uow.commit()
            raise click.ClickException(f"{person.name} may not return nodes to service: an approver or admin may")
        try:
            probation = mark_repaired(uow.session, node=node, by=person.name, note=note.strip(),
                                      config=container.policy, now=now)
        except NotKeptOut as exc:
            raise click.ClickException(str(exc)) from exc
        result = {"node": node, "probation_id": probation.id, "due_at": probation.due_at.isoformat(),
                  "by": person.name}
        uow.commit()
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{node} marked repaired by {person.name}: on probation until {result['due_at']}; gpuops returns "
                   "it to service, or gives back what it kept off it, if its GPUs stay healthy")


def register(group: click.Group) -> None:
    group.add_command(tickets)
