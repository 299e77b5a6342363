"""Command modules: each exposes `register(group)` and adds its commands to the `gpuops` group."""

COMMAND_MODULES: tuple[str, ...] = (
    "store",
    "web",
    "nab",
    "sim",
    "backtest",
    "agent",
    "cluster",
    "models",
    "daemon",
    "users",
    "policy",
    "eval",
    "bench",
    "audit",
    "node_agent",
)
