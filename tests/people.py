"""Dashboard users for tests that decide from the CLI: GPUOPS_USERS entries with a known password, and the
environment a `gpuops approve --user NAME` process needs to prove who it is."""

from __future__ import annotations

from functools import cache

from gpuops.people import hash_password

PASSWORD = "cli-user-password"


@cache
def _digest() -> str:
    return hash_password(PASSWORD)


def users_setting(**roles: str) -> str:
    """GPUOPS_USERS for `name=role` pairs, every user with PASSWORD."""
    return ";".join(f"{name}:{role}:{_digest()}" for name, role in roles.items())


def cli_env(**roles: str) -> dict[str, str]:
    """GPUOPS_USERS for `name=role` pairs and GPUOPS_PASSWORD, for a process that signs in with --user NAME."""
    return {"GPUOPS_USERS": users_setting(**roles), "GPUOPS_PASSWORD": PASSWORD}
