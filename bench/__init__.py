"""Benchmarks: each module `bench/<area>.py` exposes `run(results_dir) -> dict` and writes
`bench/results/<area>.json`. `python -m bench [AREA ...]` runs them (all by default)."""
