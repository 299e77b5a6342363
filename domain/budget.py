"""The safety budgets as policy weighed them for one action: nodes out of service against their limit, healthy
GPUs against their floor, executions in the last hour against the rate limit. Policy computes it, stores it in
the action's verdict (`to_json`), and Slack and the dashboard show it with the same words (`describe`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_COUNTS = ("nodes_out", "nodes_out_after", "nodes_out_limit", "healthy_gpus_after", "min_healthy_gpus",
           "actions_last_hour", "rate_limit")


def gpus_at_fraction(fraction: float, gpus: int) -> int:
    """`fraction` of `gpus`, rounded up (a product that misses a whole number only by float error, like
    0.55 × 100, is not rounded up): the healthy-GPU minimum before any allowance for a small fleet."""
    return int(fraction * gpus + 0.9999)


@dataclass(frozen=True)
class Budget:
    """Counts before and after one action, with the limits they are held to. The fields from `fleet_nodes` on
    say how the limits were derived; verdicts stored before they existed lack them (None)."""

    nodes_out: int                # out of service now: gpuops' leases and anyone's cordons, not-ready nodes
    nodes_out_after: int          # ... once the action took its nodes out
    nodes_out_limit: int
    healthy_gpus_after: int
    min_healthy_gpus: int
    actions_last_hour: int
    rate_limit: int               # executions per hour, fleet-wide
    fleet_nodes: int | None = None
    max_nodes_out: int | None = None
    max_nodes_out_fraction: float | None = None
    fleet_gpus: int | None = None
    min_healthy_gpu_fraction: float | None = None

    @property
    def nodes_left(self) -> int:
        """Nodes the budget still allows out after the action (negative: over the limit)."""
        return self.nodes_out_limit - self.nodes_out_after

    @property
    def spare_gpus(self) -> int:
        """Healthy GPUs above the floor after the action (negative: below it)."""
        return self.healthy_gpus_after - self.min_healthy_gpus

    def describe(self) -> list[tuple[str, str]]:
        """(label, text) lines, the one wording of a budget wherever it is shown."""
        left = _left(self.nodes_left, "left", "over")
        if self.nodes_left < 0 and self.nodes_out_after == self.nodes_out:
            left += ", already: this action takes no node out"  # a GPU-only action, or a node already out
        nodes = f"{self.nodes_out_after}/{self.nodes_out_limit} ({left})"
        if self.fleet_nodes is not None and self.max_nodes_out is not None and self.max_nodes_out_fraction is not None:
            nodes += (f"; limit: the smaller of {self.max_nodes_out} and {_percent(self.max_nodes_out_fraction)} "
                      f"of {self.fleet_nodes} nodes")
        spare = _left(self.spare_gpus, "spare", "short")
        gpus = f"{self.healthy_gpus_after} (minimum {self.min_healthy_gpus}, {spare})"
        if self.fleet_gpus is not None and self.min_healthy_gpu_fraction is not None:
            gpus += f"; minimum: {_percent(self.min_healthy_gpu_fraction)} of {self.fleet_gpus} GPUs"
            if self.min_healthy_gpus < gpus_at_fraction(self.min_healthy_gpu_fraction, self.fleet_gpus):
                gpus += ", less one node's GPUs (a fleet this small may still take one node out)"
        return [("Nodes out after", nodes), ("Healthy GPUs after", gpus),
                ("Actions this hour", f"{self.actions_last_hour}/{self.rate_limit}")]

    def to_json(self) -> dict[str, Any]:
        """The verdict's `budget` object: the counts under their stored names, then the derivation."""
        derived = {"fleet_nodes": self.fleet_nodes, "max_nodes_out": self.max_nodes_out,
                   "max_nodes_out_fraction": self.max_nodes_out_fraction, "fleet_gpus": self.fleet_gpus,
                   "min_healthy_gpu_fraction": self.min_healthy_gpu_fraction}
        return {**{name: getattr(self, name) for name in _COUNTS},
                **{k: v for k, v in derived.items() if v is not None}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Budget | None:
        """The budget a verdict stored, old or new; None when it holds none (an invalid plan's empty verdict)."""
        if not isinstance(data, Mapping) or not all(_is_int(data.get(name)) for name in _COUNTS):
            return None
        return cls(**{name: int(data[name]) for name in _COUNTS},
                   fleet_nodes=_int_or_none(data.get("fleet_nodes")),
                   max_nodes_out=_int_or_none(data.get("max_nodes_out")),
                   max_nodes_out_fraction=_float_or_none(data.get("max_nodes_out_fraction")),
                   fleet_gpus=_int_or_none(data.get("fleet_gpus")),
                   min_healthy_gpu_fraction=_float_or_none(data.get("min_healthy_gpu_fraction")))


def _left(amount: int, within: str, beyond: str) -> str:
    return f"{amount} {within}" if amount >= 0 else f"{-amount} {beyond}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return int(value) if _is_int(value) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
