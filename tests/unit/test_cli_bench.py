"""`gpuops bench`: runs the checkout's benchmarks, and outside a checkout says where they are."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from entrypoints.commands import bench as bench_commands
from tests.conftest import REPO_ROOT


def cli() -> click.Group:
    group = click.Group("gpuops")
    bench_commands.register(group)
    return group


def test_bench_names_the_benchmarks_it_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    result = CliRunner().invoke(cli(), ["bench", "no-such-area"])
    assert result.exit_code == 2
    assert "unknown benchmark(s) ['no-such-area']" in result.output and "'detectors'" in result.output


def test_bench_outside_a_checkout_says_where_the_benchmarks_are(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != REPO_ROOT])
    for name in [n for n in sys.modules if n == "bench" or n.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    result = CliRunner().invoke(cli(), ["bench"])
    assert result.exit_code == 1 and "source checkout" in result.output
