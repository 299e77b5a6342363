"""The autoscaling settings fail fast naming the variable, and the Celery beat sends the autoscaling step only
when it is enabled, at its period."""

from __future__ import annotations

from datetime import timedelta

import pytest

from entrypoints.worker import tasks
from entrypoints.worker.app import beat_schedule
from gpuops.autoscale.settings import load_autoscale_settings
from gpuops.config import Settings
from gpuops.errors import ConfigError


def test_a_bad_setting_names_its_variable() -> None:
    with pytest.raises(ConfigError, match=r"GPUOPS_AUTOSCALE_GPU_BUDGET: .*got 'many'"):
        load_autoscale_settings({"GPUOPS_AUTOSCALE_GPU_BUDGET": "many"})
    with pytest.raises(ConfigError, match="GPUOPS_AUTOSCALE_PERIOD_SECONDS"):
        load_autoscale_settings({"GPUOPS_AUTOSCALE_PERIOD_SECONDS": "0"})
    settings = load_autoscale_settings({"GPUOPS_AUTOSCALE_ENABLED": "true", "GPUOPS_AUTOSCALE_GPU_BUDGET": "24"})
    assert settings.enabled and settings.gpu_budget == 24 and settings.period_seconds == 15.0


def test_beat_sends_the_autoscaling_step_only_when_enabled() -> None:
    base = Settings(database_url="sqlite://", broker_url="redis://127.0.0.1:6379/0")
    assert "autoscale" not in beat_schedule(base, load_autoscale_settings({}))
    on = beat_schedule(base, load_autoscale_settings({"GPUOPS_AUTOSCALE_ENABLED": "1",
                                                      "GPUOPS_AUTOSCALE_PERIOD_SECONDS": "30"}))
    assert on["autoscale"] == {"task": tasks.AUTOSCALE, "schedule": timedelta(seconds=30)}


def test_the_celery_app_has_the_autoscaling_task_on_the_cycles_queue() -> None:
    from entrypoints.worker.app import create_app

    app = create_app(Settings(database_url="sqlite://", broker_url="redis://127.0.0.1:6379/0"))
    assert tasks.AUTOSCALE in app.tasks
    assert app.conf.task_routes[tasks.AUTOSCALE] == {"queue": "gpuops.cycles"}
