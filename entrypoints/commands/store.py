"""`gpuops db …` and `gpuops incidents …`."""

from __future__ import annotations

import click

from domain import IncidentStatus, Severity
from entrypoints.commands.context import echo_json, settings_from, store_container
from gpuops.errors import NotFound
from gpuops.incidents.queries import get_incident, incident_detail, incident_summary, list_incidents
from gpuops.store import migrate


@click.group("db")
def db() -> None:
    """Database schema migrations (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database named by GPUOPS_DATABASE_URL up to REVISION."""
    settings = settings_from(ctx)
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@db.command("downgrade")
@click.option("--revision", default="base", show_default=True, help="Target revision (base = empty).")
@click.confirmation_option(prompt="This drops gpuops' tables and their data. Continue?")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database down to REVISION."""
    migrate.downgrade(settings_from(ctx).database_url, revision)
    click.echo(f"database at revision {revision}")


@click.group("incidents")
def incidents() -> None:
    """Inspect incidents; acknowledge, assign, note, re-plan or resolve one."""


@incidents.command("list")
@click.option("--status", type=click.Choice([s.value for s in IncidentStatus]), default=None,
              help="Only incidents in this status.")
@click.option("--severity", type=click.Choice([s.value for s in reversed(Severity)]), default=None)
@click.option("--node", default=None, help="Only incidents on this node.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def incidents_list(ctx: click.Context, status: str | None, severity: str | None, node: str | None,
                   limit: int, as_json: bool) -> None:
    """List incidents, newest first."""
    container = store_container(ctx)
    with container.uow() as uow:
        rows = [incident_summary(i) for i in list_incidents(uow.session, status=status, severity=severity,
                                                             hostname=node, limit=limit)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no incidents")
        return
    header = f"{'ID':>5}  {'SEVERITY':<8}  {'STATUS':<17}  {'KIND':<13}  {'NODE':<14}  {'GPU':>3}  TITLE"
    click.echo(header)
    for r in rows:
        gpu = "" if r["gpu"] is None else str(r["gpu"])
        click.echo(f"{r['id']:>5}  {r['severity']:<8}  {r['status']:<17}  {r['kind']:<13}  "
                   f"{(r['hostname'] or 'fleet'):<14}  {gpu:>3}  {r['title']}")


@incidents.command("show")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def incidents_show(ctx: click.Context, incident_id: int, as_json: bool) -> None:
    """Show one incident with its timeline and actions."""
    container = store_container(ctx)
    with container.uow() as uow:
        try:
            detail = incident_detail(get_incident(uow.session, incident_id))
        except NotFound as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(detail)
        return
    click.echo(f"Incident {detail['id']}: {detail['title']}")
    for key in ("status", "severity", "kind", "scope", "hostname", "gpu", "opened_at", "resolved_at"):
        click.echo(f"  {key:<12} {detail[key]}")
    if detail["summary"]:
        click.echo(f"\n{detail['summary']}")
    if detail["timeline"]:
        click.echo("\nTimeline:")
        for ev in detail["timeline"]:
            click.echo(f"  {ev['ts'][:19]}  {ev['kind']:<20} {ev['message']}")
    if detail["actions"]:
        click.echo("\nActions:")
        for a in detail["actions"]:
            click.echo(f"  #{a['id']} {a['runbook']} {a['targets']} [{a['status']}] risk={a['risk']}")


def register(group: click.Group) -> None:
    from entrypoints.commands.ownership import add_incident_commands

    add_incident_commands(incidents)
    group.add_command(db)
    group.add_command(incidents)
