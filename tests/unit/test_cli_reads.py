"""Reading commands never create a database, and refuse filter values that match nothing by construction."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints.cli import cli


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("GPUOPS_DATABASE_URL", "GPUOPS_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.mark.parametrize("command", [["incidents", "list"], ["incidents", "show", "1"], ["audit", "verify"]])
def test_a_read_in_a_folder_without_a_database_creates_none(runner: CliRunner, tmp_path: Path,
                                                            command: list[str]) -> None:
    missing = tmp_path / "gpuops.db"  # its folder exists: SQLite would create the file on first connect
    result = runner.invoke(cli, command, env={"GPUOPS_DATABASE_URL": f"sqlite:///{missing}"})
    assert result.exit_code == 1
    assert "there is no gpuops database at" in result.output and "GPUOPS_DATABASE_URL" in result.output
    assert "gpuops db upgrade" in result.output
    assert not missing.exists()


def test_an_unknown_status_filter_is_refused_naming_the_choices(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["incidents", "list", "--status", "bogus"],
                           env={"GPUOPS_DATABASE_URL": f"sqlite:///{tmp_path / 'gpuops.db'}"})
    assert result.exit_code == 2
    assert "bogus" in result.output and "awaiting_approval" in result.output
    assert not (tmp_path / "gpuops.db").exists()
