"""`gpuops audit verify [--checkpoints FILE]`: check the audit chain page by page (with the audit key, against
signed checkpoints kept outside the database) and report the first bad event; `gpuops audit checkpoint`: sign
the head now and export it."""

from __future__ import annotations

from pathlib import Path

import click

from entrypoints.commands.context import echo_json, store_container
from gpuops.store.audit import Checkpoint, checkpoint_head, read_checkpoints, verify_chain


@click.group("audit")
def audit() -> None:
    """The audit trail's hash chain."""


@audit.command("verify")
@click.option("--checkpoints", "files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of signed checkpoints (GPUOPS_AUDIT_CHECKPOINT_FILE, or gpuops' log); repeatable.")
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(1, 100_000),
              help="Events read per page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify(ctx: click.Context, files: tuple[Path, ...], batch: int, as_json: bool) -> None:
    """Verify the chain; exit 1 and name the first bad event when it does not verify."""
    checkpoints: list[Checkpoint] = []
    for path in files:
        found = read_checkpoints(path.read_text(encoding="utf-8", errors="replace").splitlines())
        if not found:
            raise click.ClickException(f"no audit checkpoint in {path}")
        checkpoints += found
    container = store_container(ctx)
    with container.session_factory() as session:
        report = verify_chain(session, batch, checkpoints=checkpoints)
    if as_json:
        echo_json(report.as_dict())
    else:
        first = report.first_problem
        if first is None:
            click.echo(f"chain ok: {report.checked} events ({report.keyed} keyed, {report.unkeyed} unkeyed), "
                       f"checked against {report.checkpoints} signed checkpoint(s)")
        else:
            click.echo(f"chain broken: first bad event {first.seq}: {first.problem}")
            for problem in report.problems:
                if problem is not first:
                    click.echo(f"  event {problem.seq}: {problem.problem}")
        for note in report.notes():
            click.echo(f"note: {note}")
    if not report.ok:
        ctx.exit(1)


@audit.command("checkpoint")
@click.pass_context
def checkpoint(ctx: click.Context) -> None:
    """Sign the chain's head now and export it (log, and GPUOPS_AUDIT_CHECKPOINT_FILE when set)."""
    container = store_container(ctx)
    with container.session_factory() as session:
        signed = checkpoint_head(session)
    if signed is None:
        raise click.ClickException("nothing to sign: set GPUOPS_AUDIT_KEY or GPUOPS_AUDIT_KEY_FILE, and append an "
                                   "event first")
    click.echo(signed.line())


def register(group: click.Group) -> None:
    group.add_command(audit)
