"""`gpuops models …`: train the learned risk model on the twin and list the registry."""

from __future__ import annotations

from pathlib import Path

import click

from detectors.registry import ModelRegistry
from detectors.risk import RISK_MODEL_NAME
from entrypoints.commands.context import echo_json
from evaluation.risk_training import train_on_twin
from gpuops.model_store import DirectoryStore
from simulator.durations import parse_duration
from simulator.scenario_files import load_scenario


def _seeds(value: str, name: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter("expected comma-separated integers, e.g. 1,2,3", param_hint=name) from exc


@click.group("models")
def models() -> None:
    """Versioned detector models (the learned risk model)."""


@models.command("train-risk")
@click.option("--scenarios", "scenario_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="A scenario file or a folder of them (the twin's history to learn from).")
@click.option("--train-seeds", default="1,2,3", show_default=True)
@click.option("--validation-seeds", default="901,902", show_default=True, help="Seeds never used for training.")
@click.option("--horizon", default="1h", show_default=True, help="Failure within this horizon is a positive.")
@click.option("--registry", "registry_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def train_risk(scenario_dir: Path, train_seeds: str, validation_seeds: str, horizon: str, registry_dir: Path,
               as_json: bool) -> None:
    """Train the risk model on twin runs and register it with its validation metrics."""
    paths = sorted(scenario_dir.glob("*.yaml")) if scenario_dir.is_dir() else [scenario_dir]
    try:
        scenarios = [load_scenario(p) for p in paths]
        horizon_s = parse_duration(horizon)
    except ValueError as exc:  # a bad scenario (ScenarioError is one) or a bad --horizon
        raise click.ClickException(str(exc)) from exc
    try:
        result = train_on_twin(scenarios, train_seeds=_seeds(train_seeds, "--train-seeds"),
                               validation_seeds=_seeds(validation_seeds, "--validation-seeds"),
                               horizon_s=horizon_s, registry=ModelRegistry(DirectoryStore(registry_dir)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    summary = {"model": result.version.tag, "train_rows": result.train_rows,
               "validation_rows": result.validation_rows, "validation": result.metrics}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"registered {result.version.tag}: validation {result.metrics}")


@models.command("list")
@click.option("--registry", "registry_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def list_models(registry_dir: Path, as_json: bool) -> None:
    """The registered versions with their data hash and metrics."""
    versions = ModelRegistry(DirectoryStore(registry_dir)).versions(RISK_MODEL_NAME)
    rows = [{"model": v.tag, "created_at": v.created_at, "data_hash": v.data_hash, "metrics": v.metrics}
            for v in versions]
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no models registered")
    else:
        for r in rows:
            click.echo(f"{r['model']}  {r['created_at']}  data {str(r['data_hash'])[:12]}  {r['metrics']}")


def register(group: click.Group) -> None:
    group.add_command(models)
