"""GPUOPS_ALERTMANAGER_TOKEN and its _FILE form: long enough, one of the two, never shown in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuops.config import load_settings
from gpuops.errors import ConfigError

TOKEN = "am-token-0123456789abcdef"


def test_unset_means_the_receiver_is_off() -> None:
    assert load_settings({}).alertmanager_token is None


def test_the_token_or_its_file(tmp_path: Path) -> None:
    assert load_settings({"GPUOPS_ALERTMANAGER_TOKEN": TOKEN}).alertmanager_token.get_secret_value() == TOKEN  # type: ignore[union-attr]
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    settings = load_settings({"GPUOPS_ALERTMANAGER_TOKEN_FILE": str(path)})
    assert settings.alertmanager_token is not None and settings.alertmanager_token.get_secret_value() == TOKEN


@pytest.mark.parametrize(("env", "says"), [
    ({"GPUOPS_ALERTMANAGER_TOKEN": "short-secret"}, "GPUOPS_ALERTMANAGER_TOKEN: too short"),
    ({"GPUOPS_ALERTMANAGER_TOKEN_FILE": "/nonexistent/token"}, "GPUOPS_ALERTMANAGER_TOKEN_FILE: cannot read"),
])
def test_a_bad_token_stops_start_up_without_showing_it(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as failed:
        load_settings(env)
    assert says in str(failed.value) and "short-secret" not in str(failed.value)


def test_both_forms_with_different_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("another-token-0123456789")
    with pytest.raises(ConfigError, match="both set"):
        load_settings({"GPUOPS_ALERTMANAGER_TOKEN": TOKEN, "GPUOPS_ALERTMANAGER_TOKEN_FILE": str(path)})
