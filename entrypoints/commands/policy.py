"""`gpuops policy reset-breaker --reason …`: close the circuit breaker once a human has looked into the failed
verifications that opened it, so that automation resumes. Only an authenticated dashboard user with role approver or
admin may; every attempt is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from entrypoints.commands.context import echo_json, store_container
from entrypoints.commands.credentials import authenticate, credential_options
from gpuops.policy import BreakerReset, reset_breaker


@click.group("policy")
def policy() -> None:
    """The policy layer's own state: the circuit breaker."""


@policy.command("reset-breaker")
@click.option("--reason", required=True, help="Why automation may resume (goes to the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@credential_options
@click.pass_context
def reset_breaker_command(ctx: click.Context, /, reason: str, as_json: bool, **credentials: Any) -> None:
    """Close the circuit breaker that failed verifications opened (as an authenticated approver or admin)."""
    if not reason.strip():
        raise click.BadParameter("say why automation may resume", param_hint="--reason")
    container = store_container(ctx)
    person = authenticate(container, **credentials)
    with container.uow() as uow:
        result = reset_breaker(uow.session, actor=person.name, reason=reason.strip(), authorised=person.may_decide,
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
