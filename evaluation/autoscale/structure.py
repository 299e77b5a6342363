"""What a request trace holds for a scaler, measured: the figures behind "What the trace holds" in the README's
"Autoscaling inference". `python -m evaluation.autoscale.structure --requests F [--json]`.

* quiet spells: for each request, how long its model had been without work (since its latest request ended,
  every request served at once); the first request of a model follows an endless spell;
* the hindsight bound of idle timeouts: for a price per cold start (GPU-seconds), each model's best fixed idle
  timeout chosen knowing the whole trace; the share of requests that find their model down against the idle
  GPU-hours spent. No scaler that decides by idle time alone does better at like GPU-hours;
* wake-ups announced elsewhere: of the requests after a spell longer than `quiet_s`, the share whose user group
  (`groupId`) sent a request to another model within `lead_s` before, and how far before;
* the bound of a scaler told where each group goes next: the hindsight timeouts again, but every request whose
  group's latest request (within `lead_s`) went to another model is served warm for free. A real scaler sees
  deployments, not groups, and is never told which model a group calls next: this is what knowing that would
  be worth, at most;
* where a group goes next: of the told requests that found their model quiet for more than `down_s`, the share
  whose move (from the group's previous model to this one) the group had made before, the share whose pair of
  models any group had, and how many models had followed the previous one (a scaler prewarming on the pair
  would start them all);
* recurrence: the share of those requests with a request to the same model an hour or a day earlier, to
  within a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator.request_trace import REQUEST_FIELDS, FloatArray, IntArray, TraceError, _number, _rows, _timestamp

BoolArray = npt.NDArray[np.bool_]

PRICES_S = (300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
RECURRENCE_S = (3600.0, 86400.0)


@dataclass(frozen=True)
class GroupedTrace:
    """Requests with a base model, sorted by arrival, with each request's user group (an index)."""

    arrival: FloatArray
    service: FloatArray
    model: IntArray
    group: IntArray


def read_grouped(path: Path) -> GroupedTrace:
    """`read_requests`' rows (the same order, the same rows skipped) with `groupId` too."""
    arrivals: list[float] = []
    services: list[float] = []
    models: list[str] = []
    groups: list[str] = []
    for line, row in _rows(path, (*REQUEST_FIELDS, "groupId")):
        name = row["checkpoint_model_version_id"].strip()
        at = _timestamp(path, line, "gmt_create", row["gmt_create"])
        service = _number(path, line, "exec_time_seconds", row["exec_time_seconds"])
        if not name:
            continue
        arrivals.append(at)
        services.append(service)
        models.append(name)
        groups.append(row["groupId"].strip())
    if not arrivals:
        raise TraceError(f"{path}: no request with a base model")
    order = np.argsort(np.asarray(arrivals), kind="stable")
    model_ids = {m: i for i, m in enumerate(sorted(set(models)))}
    group_ids = {g: i for i, g in enumerate(sorted(set(groups)))}
    return GroupedTrace(np.asarray(arrivals)[order], np.asarray(services)[order],
                        np.asarray([model_ids[m] for m in models], dtype=np.int64)[order],
                        np.asarray([group_ids[g] for g in groups], dtype=np.int64)[order])


def quiet_spells(trace: GroupedTrace) -> FloatArray:
    """Per request, seconds its model had been without work (negative: it arrived while one was running)."""
    spell = np.empty(trace.arrival.size)
    busy_until: dict[int, float] = {}
    for i, (at, service, model) in enumerate(zip(trace.arrival, trace.service, trace.model, strict=True)):
        end = busy_until.get(int(model), -math.inf)
        spell[i] = at - end
        busy_until[int(model)] = max(end, at + service)
    return spell


def timeout_bound(trace: GroupedTrace, spell: FloatArray, price_s: float,
                  told: BoolArray | None = None) -> tuple[float, float]:
    """(share of requests finding their model down, idle GPU-hours) under each model's best idle timeout for a
    cold start priced at `price_s` GPU-seconds, chosen in hindsight. A request in `told` is served warm whatever
    the timeout, and its gap costs nothing (a replica started just in time, its cold start not charged)."""
    down = 0
    idle = 0.0
    free = np.zeros(trace.arrival.size, dtype=bool) if told is None else told
    for model in np.unique(trace.model):
        gaps = np.sort(spell[(trace.model == model) & (spell > 0) & ~free])
        finite = gaps[np.isfinite(gaps)]
        endless = gaps.size - finite.size  # a model's first request finds it down whatever the timeout
        n = finite.size
        # timeout = the k-th smallest gap (k = -1: no timeout): idle = the gaps up to it + the timeout for the rest
        ranks = np.arange(-1, n)
        kept = np.concatenate(([0.0], np.cumsum(finite)))
        timeout = np.concatenate(([0.0], finite))
        above = n - 1 - ranks
        cost = kept + above * (timeout + price_s)
        best = int(np.argmin(cost))
        down += int(above[best]) + endless
        idle += float(kept[best] + above[best] * timeout[best])
    return down / trace.arrival.size, idle / 3600.0


def told_where_groups_go(trace: GroupedTrace, lead_s: float) -> BoolArray:
    """Per request: its group's latest earlier request went to another model within `lead_s` (a scaler that
    knew groups and where each goes next could have started this model in time)."""
    told = np.zeros(trace.arrival.size, dtype=bool)
    latest: dict[int, tuple[float, int]] = {}
    for i, (at, model, group) in enumerate(zip(trace.arrival, trace.model, trace.group, strict=True)):
        before = latest.get(int(group))
        told[i] = before is not None and before[1] != model and at - before[0] <= lead_s
        latest[int(group)] = (float(at), int(model))
    return told


def next_model_seen(trace: GroupedTrace, spell: FloatArray, lead_s: float, down_s: float = 60.0) -> dict[str, float]:
    """Of the requests told by `told_where_groups_go` that found their model quiet for more than `down_s`: the
    share whose move the group had made before, the share whose pair (previous model, this one) any group had
    made within `lead_s`, and the median and 90th percentile of the models seen to follow the previous one."""
    latest: dict[int, tuple[float, int]] = {}
    by_group: dict[tuple[int, int], set[int]] = {}
    by_pair: dict[int, set[int]] = {}
    told = 0
    group_seen = 0
    pair_seen = 0
    followers: list[int] = []
    for at, m, g, quiet in zip(trace.arrival, trace.model, trace.group, spell, strict=True):
        group, model = int(g), int(m)
        before = latest.get(group)
        moved = before is not None and before[1] != model and at - before[0] <= lead_s
        if before is not None and moved and quiet > down_s:
            told += 1
            group_seen += model in by_group.get((group, before[1]), ())
            after = by_pair.get(before[1], set())
            pair_seen += model in after
            followers.append(len(after))
        if before is not None and moved:
            by_group.setdefault((group, before[1]), set()).add(model)
            by_pair.setdefault(before[1], set()).add(model)
        latest[group] = (float(at), model)
    if not told:
        return {"told_requests_down": 0, "share_move_seen_in_group": math.nan, "share_pair_seen": math.nan,
                "followers_p50": math.nan, "followers_p90": math.nan}
    q = np.percentile(np.asarray(followers, dtype=np.float64), [50, 90])
    return {"told_requests_down": told, "share_move_seen_in_group": round(group_seen / told, 4),
            "share_pair_seen": round(pair_seen / told, 4), "followers_p50": float(q[0]), "followers_p90": float(q[1])}


def announced(trace: GroupedTrace, spell: FloatArray, quiet_s: float, lead_s: float) -> dict[str, float]:
    """Of the requests after a spell longer than `quiet_s`: the share whose group's latest earlier request was
    to another model within `lead_s`, and those leads' quartiles and share within 2 min."""
    latest: dict[int, tuple[float, int]] = {}
    leads: list[float] = []
    woke = 0
    for at, model, group, quiet in zip(trace.arrival, trace.model, trace.group, spell, strict=True):
        if quiet > quiet_s:
            woke += 1
            before = latest.get(int(group))
            if before is not None and before[1] != model and at - before[0] <= lead_s:
                leads.append(float(at - before[0]))
        latest[int(group)] = (float(at), int(model))
    lead = np.asarray(leads)
    q = np.percentile(lead, [25, 50, 75]) if lead.size else [math.nan] * 3
    return {"requests_after_quiet": woke, "share_announced": round(len(leads) / woke, 4) if woke else math.nan,
            "lead_p25_s": float(q[0]), "lead_p50_s": float(q[1]), "lead_p75_s": float(q[2]),
            "share_of_leads_within_120_s": round(float(np.mean(lead <= 120.0)), 4) if lead.size else math.nan}


def recurrence(trace: GroupedTrace, spell: FloatArray, quiet_s: float, within_s: float = 60.0) -> dict[str, float]:
    """Of the requests after a spell longer than `quiet_s`, the share with a request to the same model an hour
    (a day) earlier, to within `within_s`."""
    woke = np.flatnonzero(spell > quiet_s)
    out: dict[str, float] = {}
    for period in RECURRENCE_S:
        hits = 0
        for i in woke:
            same = trace.arrival[trace.model == trace.model[i]]
            j = np.searchsorted(same, trace.arrival[i] - period - within_s)
            hits += bool(j < same.size and same[j] <= trace.arrival[i] - period + within_s)
        out[f"share_recurring_after_{int(period)}_s"] = round(hits / woke.size, 4) if woke.size else math.nan
    return out


def describe(trace: GroupedTrace, quiet_s: float = 900.0, lead_s: float = 600.0) -> dict[str, Any]:
    spell = quiet_spells(trace)
    told = told_where_groups_go(trace, lead_s)

    def bound(where: BoolArray | None) -> dict[str, dict[str, float]]:
        return {f"{price:.0f}": dict(zip(("share_down", "idle_gpu_hours"),
                                         (round(x, 4) for x in timeout_bound(trace, spell, price, where)),
                                         strict=True))
                for price in PRICES_S}

    return {
        "requests": int(trace.arrival.size),
        "busy_gpu_hours": round(float(trace.service.sum()) / 3600.0, 1),
        "share_after_quiet": {f"{s:.0f}": round(float(np.mean(spell > s)), 4) for s in (300.0, 900.0, 3600.0)},
        "timeout_bound_by_cold_start_price_s": bound(None),
        "share_told_where_groups_go": round(float(np.mean(told)), 4),
        "told_bound_by_cold_start_price_s": bound(told),
        "where_groups_go_next": next_model_seen(trace, spell, lead_s),
        "announced_by_another_model": announced(trace, spell, quiet_s, lead_s),
        "recurrence": recurrence(trace, spell, quiet_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=Path, required=True, help="request trace in GenTD26's format")
    parser.add_argument("--quiet", type=float, default=900.0, help="a quiet spell longer than this wakes (s)")
    parser.add_argument("--lead", type=float, default=600.0, help="how far back another model's request counts (s)")
    args = parser.parse_args(argv)
    try:
        report = describe(read_grouped(args.requests), args.quiet, args.lead)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
