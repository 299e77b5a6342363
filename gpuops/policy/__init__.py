"""The policy layer: the only place that says yes or no to an action. Plain code; no LLM output can
bypass it. Decisions are serialised across workers by locking one database row."""

from gpuops.policy.config import FreezeWindow, PolicyConfig
from gpuops.policy.engine import (
    ActionSpec,
    BreakerReset,
    FleetFacts,
    Gate,
    Verdict,
    budget_wait,
    evaluate,
    record_verification,
    release_node,
    reset_breaker,
    soak_until,
)
from gpuops.policy.scope import scope_violations

__all__ = [
    "ActionSpec", "BreakerReset", "FleetFacts", "FreezeWindow", "Gate", "PolicyConfig", "Verdict", "budget_wait",
    "evaluate", "record_verification", "release_node", "reset_breaker", "scope_violations", "soak_until",
]
