"""`gpuops bench`: the benchmarks of a source checkout (the same as `make bench` once the bench extra is in)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click


@click.command("bench")
@click.argument("areas", nargs=-1)
def bench(areas: tuple[str, ...]) -> None:
    """Run the benchmarks (all, or the AREAS named) and write their figures to bench/results/*.json. They live
    in the source checkout: run this from its root."""
    if (Path.cwd() / "bench" / "__main__.py").is_file() and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        runner = importlib.import_module("bench.__main__")
    except ImportError as exc:
        raise click.ClickException("the benchmarks live in the source checkout's bench/ folder: run `gpuops bench` "
                                   "from the checkout's root, or `make bench`") from exc
    sys.exit(runner.main(list(areas)))


def register(group: click.Group) -> None:
    group.add_command(bench)
