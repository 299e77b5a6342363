"""`gpuops eval`: the whole system on scenario files, in simulated time, scored against two baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from entrypoints.commands.context import echo_json, settings_from
from gpuops.errors import ConfigError
from gpuops.policy.config import load_policy
from simulator.scenario import ScenarioError


@click.command("eval")
@click.option("--scenario", "scenario", required=True, type=click.Path(path_type=Path),
              help="A scenario file, or a folder of them (every *.yaml / *.yml).")
@click.option("--planner", type=click.Choice(["rules", "llm"]), default="rules", show_default=True,
              help="Who plans remedies for scenarios that name no planner of their own (`planner:` in the file).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-results"),
              show_default=True, help="Where report.json and the PNG plots go.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the tables.")
@click.pass_context
def eval_command(ctx: click.Context, scenario: Path, planner: str, out: Path, as_json: bool) -> None:
    """Run detection, incidents, the agent, policy, approvals (as each scenario's `approval` says), execution
    against the twin's Kubernetes API and verification on every scenario, at high speed in simulated time.

    Reports per fault: detected, time to detect, lead time before failure, runbooks executed, verified, time
    to mitigate; per run: recall, false incidents, unsafe actions proposed / blocked / executed, and GPU-hours
    lost under gpuops against no automation and fixed-threshold alerts with a human acting 30 minutes later.
    Policy comes from GPUOPS_POLICY_FILE when set, else the defaults.

    A scenario may name its own planner (`planner: rules | llm | llm_out_of_scope`); `llm_out_of_scope` runs
    the real LLM planner against a scripted model that proposes actions outside the incident, to show that
    the validation in code and policy block them. Every scenario file is validated before any runs.
    """
    from evaluation.run import EvalRequest, render, run_eval

    settings = settings_from(ctx)
    root, level = logging.getLogger(), logging.getLogger().level
    if not ctx.ensure_object(dict).get("log_level"):
        root.setLevel(logging.WARNING)  # the loop's per-action logs would bury the tables
    try:
        policy = load_policy(Path(settings.policy_file) if settings.policy_file else None)
        request = EvalRequest(scenario=scenario, planner=planner, out=out, policy=policy, settings=settings)
        report = run_eval(request, progress=(lambda _: None) if as_json else
                          (lambda line: click.echo(line, err=True)))
    except (ScenarioError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        root.setLevel(level)
    if as_json:
        echo_json(report)
        return
    click.echo(render(report))
    click.echo(f"\nreport: {out / 'report.json'}; plots: {', '.join(str(out / p) for p in report['plots'])}")


def register(group: click.Group) -> None:
    group.add_command(eval_command)
