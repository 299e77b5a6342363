"""Dashboard settings: users with hashed passwords, proxy roles, the session secret; and `gpuops users
hash-password`, whose output is a valid GPUOPS_USERS entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints.cli import cli
from entrypoints.web.auth import demo_admin, verify_password
from gpuops.config import load_settings
from gpuops.errors import ConfigError


def test_hash_password_prints_an_entry_that_signs_in() -> None:
    result = CliRunner().invoke(cli, ["users", "hash-password", "--name", "alice", "--role", "approver", "--stdin"],
                                input="correct horse\n")
    assert result.exit_code == 0, result.output
    entry = result.output.strip()
    settings = load_settings({"GPUOPS_USERS": entry})
    (alice,) = settings.users
    assert (alice.name, alice.role) == ("alice", "approver")
    assert verify_password(alice.password_hash, "correct horse")
    assert not verify_password(alice.password_hash, "wrong horse")
    assert "correct horse" not in entry


def test_hash_password_refuses_a_short_password() -> None:
    result = CliRunner().invoke(cli, ["users", "hash-password", "--stdin"], input="short\n")
    assert result.exit_code != 0 and "too short" in result.output


@pytest.mark.parametrize(("env", "variable"), [
    ({"GPUOPS_USERS": "alice:boss:$argon2id$x"}, "GPUOPS_USERS"),
    ({"GPUOPS_USERS": "alice:admin:plaintext"}, "GPUOPS_USERS"),
    ({"GPUOPS_PROXY_ROLES": "pat:root"}, "GPUOPS_PROXY_ROLES"),
    ({"GPUOPS_TRUSTED_PROXY_HEADER": "X Forwarded User"}, "GPUOPS_TRUSTED_PROXY_HEADER"),
    ({"GPUOPS_SESSION_SECRET": "short"}, "GPUOPS_SESSION_SECRET"),
    ({"GPUOPS_USERS_FILE": "/nonexistent/users"}, "GPUOPS_USERS_FILE"),
])
def test_bad_dashboard_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert variable in str(info.value)
    assert "plaintext" not in str(info.value) and "short'" not in str(info.value)


def test_users_file_adds_to_users(tmp_path: Path) -> None:
    entry = CliRunner().invoke(cli, ["users", "hash-password", "--name", "bob", "--role", "viewer", "--stdin"],
                               input="bobs password\n").output.strip()
    path = tmp_path / "users"
    path.write_text(f"# dashboard users\n{entry}\n")
    settings = load_settings({"GPUOPS_USERS_FILE": str(path), "GPUOPS_PROXY_ROLES": "pat:admin,*:viewer"})
    assert [u.name for u in settings.users] == ["bob"]
    assert settings.proxy_role("pat") == "admin" and settings.proxy_role("anyone") == "viewer"


def test_demo_admin_adds_a_random_admin_password() -> None:
    settings, password = demo_admin(load_settings({}))
    (admin,) = settings.users
    assert admin.role == "admin" and verify_password(admin.password_hash, password) and len(password) >= 12
    assert demo_admin(settings)[1] != password
