"""Detection for gpuops: pure functions and streaming models over `FleetFrame`s, no I/O.

Entry point: `detectors.pipeline.DetectionCycle` (`update(frame) -> list[Finding]`, `state_bytes()` /
`DetectionCycle.from_state`). Its stages, in order:

- `rules`: XID catalogue (`xid`), double-bit ECC, remapped rows, row-remap failure, temperature limits,
  a GPU whose series vanish, node not Ready;
- `anomaly`: robust per-series baselines, CUSUM on error-counter rates; `multivariate`: a model per GPU
  model class; `peers`: stragglers, hung jobs, hot GPUs against their job and node; `saturation`: an
  inference Deployment overloaded against its usual level;
- `forecast`: time to a limit with prediction intervals.

Beside the cycle: `risk` (calibrated failure-within-horizon model, `RiskScoring` stage once trained),
`registry` (versioned model artefacts), `univariate` (streaming single-series detectors for NAB) and
`nab_scorer` (NAB's scoring). Metric names live in `metrics`.
"""
