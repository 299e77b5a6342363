"""`gpuops autoscale eval`: replay a request trace through the replica simulator, gpuops' scaler against the
reactive and warm-1 baselines and the oracle bound. `gpuops autoscale live`: the same scaler live on the twin's
replay of a request trace, against that span replayed offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from evaluation.autoscale.run import PARTS, EvaluationInputs, Part, evaluate
from gpuops.autoscale.planner import PlannerSettings
from gpuops.autoscale.settings import AutoscaleSettings
from simulator.durations import parse_duration
from simulator.request_trace import TraceError
from simulator.scenario import ScenarioError

TERMS_ON = ("seasonal", "gate", "cross")  # on by default
TERMS_OFF = ("hazard",)


def register(group: click.Group) -> None:
    group.add_command(autoscale)


@click.group("autoscale")
def autoscale() -> None:
    """Predictive autoscaling of inference deployments."""


@autoscale.command("eval")
@click.option("--requests", "requests_file", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Request trace in GenTD26's format (gmt_create, exec_time_seconds, "
                   "checkpoint_model_version_id; plain or gzip).")
@click.option("--coldstarts", "cold_starts_file", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Cold starts in GenTD26's format (value in ms, e.g. basemodel_update_latency.csv.gz).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the cold-start draws.")
@click.option("--period", "period_s", type=click.FloatRange(min=1.0), default=15.0, show_default=True,
              help="Seconds between scaling decisions.")
@click.option("--part", type=click.Choice(PARTS), default="whole", show_default=True,
              help="Replay the whole trace or one half of its time span.")
@click.option("--warm-value", "warm_value_s", type=click.FloatRange(min=0.0), default=PlannerSettings.warm_value_s,
              show_default=True, help="gpuops' operating point: the GPU-seconds one avoided cold-start wait is "
                                      "worth (larger keeps more replicas warm).")
@click.option("--without", "without", type=click.Choice(TERMS_ON), multiple=True,
              help="Leave this term out of gpuops' demand rate (repeatable; for comparison): the hour-of-day "
                   "and -week profile, its gate (the profile held only for a quiet spell already lived through), "
                   "the cross-deployment wake-ups.")
@click.option("--with", "with_", type=click.Choice(TERMS_OFF), multiple=True,
              help="Add this term to gpuops' demand rate: the idle-gap hazard.")
@click.option("--keep-alive-bound", is_flag=True,
              help="Also trace the hindsight keep-alive frontier: each model's keep-alive chosen after seeing the "
                   "whole trace, the best any keep-alive can do (slower: 14 more replays).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_command(requests_file: Path, cold_starts_file: Path, seed: int, period_s: float, part: Part,
                     warm_value_s: float, without: tuple[str, ...], with_: tuple[str, ...], keep_alive_bound: bool,
                     as_json: bool) -> None:
    """Replay a request trace: GPU-hours and request waits for gpuops, reactive, warm-1 and the oracle."""
    settings = PlannerSettings(period_s=period_s, warm_value_s=warm_value_s, seasonal="seasonal" not in without,
                               seasonal_gate="gate" not in without, cross="cross" not in without,
                               hazard="hazard" in with_)
    try:
        report = evaluate(EvaluationInputs(requests_file, cold_starts_file, seed, period_s, part,
                                           keep_alive_bound), settings)
    except TraceError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    click.echo(_table(report))


def _table(report: dict[str, Any]) -> str:
    lines = [f"{report['requests']} requests ({report['part']}, {report['hours']} h, {report['models']} models; "
             f"{report['skipped_without_base_model']} without a base model skipped), cold start p50 "
             f"{report['cold_start_p50_s']} s, p90 {report['cold_start_p90_s']} s, seed {report['seed']}",
             f"{'policy':<10}{'GPU-hours':>11}{'wait p50':>10}{'p95':>8}{'p99':>8}{'> 5 s':>9}"]
    for name, s in report["policies"].items():
        lines.append(f"{name:<10}{s['gpu_hours']:>11.1f}{s['wait_p50_s']:>9.1f}s{s['wait_p95_s']:>7.1f}s"
                     f"{s['wait_p99_s']:>7.1f}s{100 * s['share_wait_over_5s']:>8.1f}%")
    t = report["targets"]
    lines.append(f"gpuops: {t['gpu_hours_vs_reactive']}x reactive's GPU-hours, {t['gpu_hours_vs_oracle']}x the "
                 f"oracle's; target (<= 5% over 5 s, <= reactive's GPU-hours) "
                 f"{'met' if t['target_met'] else 'missed'}; moonshot (<= 2%, <= 1.5x oracle) "
                 f"{'met' if t['moonshot_met'] else 'missed'}")
    bound = report.get("keep_alive_hindsight")
    if bound:
        at, needed = bound["share_wait_over_5s_at_reactive_gpu_hours"], bound["gpu_hours_for_target_share"]
        lines.append("keep-alive chosen per model with hindsight: "
                     f"{'-' if at is None else f'{100 * at:.1f}%'} over 5 s at reactive's GPU-hours; "
                     f"<= {100 * bound['target_share']:.0f}% needs "
                     f"{'more than it reaches' if needed is None else f'{needed:.1f} GPU-hours'}")
    lines.append(f"run took {report['seconds']} s")
    return "\n".join(lines)


@autoscale.command("live")
@click.option("--scenario", "scenario_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              required=True, help="A scenario whose `serving.replay` replays a request trace "
              "(simulator/scenarios/replay/gentd26_serving.yaml).")
@click.option("--history", "history", default="1d", show_default=True,
              help="Run this much of the scenario first under a reactive scaler: gpuops' demand history.")
@click.option("--live", "live", default=None, help="Run gpuops live for this long (default: the rest).")
@click.option("--scale-down-cooldown", "cooldown", type=click.FloatRange(min=0.0),
              default=AutoscaleSettings.model_fields["scale_down_cooldown_seconds"].default, show_default=True,
              help="The autoscaling policy's scale-down cool-down, in seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the offline cold-start draws.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def live_command(scenario_file: Path, history: str, live: str | None, cooldown: float, seed: int,
                 as_json: bool) -> None:
    """gpuops' autoscaling cycle live on the twin's replay of a request trace (its Kubernetes API and vLLM
    metrics), against the same span replayed offline under gpuops' planner and reactive."""
    from evaluation.autoscale.live import LiveInputs, run_live

    try:
        inputs = LiveInputs(scenario_file, parse_duration(history), None if live is None else parse_duration(live),
                            seed, cooldown)
        report = run_live(inputs)
    except (ValueError, ScenarioError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    lines = [f"{report['scenario']}: {report['deployments']} Deployments, {report['history_hours']} h of history, "
             f"{report['live_hours']} h live ({report['cycles']} cycles, {report['seconds_per_cycle']} s each), "
             f"scale-down cool-down {report['scale_down_cooldown_s']:g} s",
             f"{'policy':<20}{'requests':>9}{'GPU-hours':>11}{'wait p95':>10}{'> 5 s':>9}"]
    rows = [report["live"], *({**s, "policy": f"{s['policy']} (offline)"} for s in report["offline"].values())]
    for s in rows:
        lines.append(f"{s['policy']:<20}{s['requests']:>9}{s['gpu_hours']:>11.1f}"
                     f"{s.get('wait_p95_s', 0.0):>9.1f}s{100 * s.get('share_wait_over_5s', 0.0):>8.1f}%")
    lines.append(f"requests a scale-down interrupted live: {report['live'].get('requests_interrupted', 0)}")
    click.echo("\n".join(lines))
