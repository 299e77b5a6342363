"""Run the benchmarks and write their figures to bench/results/*.json."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    available = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("areas", nargs="*", metavar="AREA", help=f"benchmarks to run (default: all of {available})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.areas) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    chosen = args.areas or available
    if not chosen:
        print("no benchmarks defined yet")
        return 0
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        print(f"== bench {name}", flush=True)
        figures = module.run(RESULTS)
        print(json.dumps(figures, indent=2, default=str))
    print(f"results written to {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
