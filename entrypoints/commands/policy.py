"""`gpuops policy reset-breaker --reason …`: close the circuit breaker once a human has looked into the failed
verifications that opened it, so that automation resumes. Only GPUOPS_APPROVERS may; every attempt is audited."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import click

from entrypoints.commands.context import echo_json, store_container
from gpuops.policy import BreakerReset, reset_breaker


@click.group("policy")
def policy() -> None:
    """The policy layer's own state: the circuit breaker."""


@policy.command("reset-breaker")
@click.option("--as", "identity", default=None, help="Who resets it (default: the login name); must be listed in "
                                                     "GPUOPS_APPROVERS.")
@click.option("--reason", required=True, help="Why automation may resume (goes to the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def reset_breaker_command(ctx: click.Context, identity: str | None, reason: str, as_json: bool) -> None:
    """Close the circuit breaker that failed verifications opened."""
    if not reason.strip():
        raise click.BadParameter("say why automation may resume", param_hint="--reason")
    container = store_container(ctx)
    who = identity or getpass.getuser()
    with container.uow() as uow:
        result = reset_breaker(uow.session, actor=who, reason=reason.strip(), approvers=container.settings.approvers,
                               now=datetime.now(tz=UTC))
        uow.commit()  # a refusal too: it stays in the audit trail
    if result.refusal is not None:
        raise click.ClickException(f"{result.refusal}; nothing was changed")
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(describe(result))


def describe(result: BreakerReset) -> str:
    """One line saying what the reset did."""
    if not result.closed:
        return f"the circuit breaker was not open; nothing changed (the attempt by {result.actor} is audited)"
    since = f" since {result.opened_at.isoformat()}" if result.opened_at else ""
    return (f"circuit breaker closed by {result.actor}: it had been open{since} ({result.opened_because}); "
            "automation resumes")


def register(group: click.Group) -> None:
    group.add_command(policy)
