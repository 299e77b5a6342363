from __future__ import annotations

import pytest

from gpuops.config import load_settings
from gpuops.errors import ConfigError


def test_defaults_are_embedded_sqlite_and_dry_run() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///./gpuops.db"
    assert settings.embedded
    assert settings.dry_run is True
    assert not settings.llm_configured


@pytest.mark.parametrize(
    ("env", "variable", "expectation"),
    [
        ({"GPUOPS_DATABASE_URL": "nonsense"}, "GPUOPS_DATABASE_URL", "SQLAlchemy URL"),
        ({"GPUOPS_DATABASE_URL": "mysql://u@h/db"}, "GPUOPS_DATABASE_URL", "not supported"),
        ({"GPUOPS_API_PORT": "eighty"}, "GPUOPS_API_PORT", "TCP port"),
        ({"GPUOPS_API_PORT": "70000"}, "GPUOPS_API_PORT", "TCP port"),
        ({"GPUOPS_DRY_RUN": "maybe"}, "GPUOPS_DRY_RUN", "true or false"),
        ({"GPUOPS_BROKER_URL": "amqp://x"}, "GPUOPS_BROKER_URL", "Redis URL"),
        ({"GPUOPS_PROMETHEUS_URL": "prom:9090"}, "GPUOPS_PROMETHEUS_URL", "http(s) URL"),
        ({"OPENAI_BASE_URL": "localhost:8000"}, "OPENAI_BASE_URL", "OpenAI-compatible"),
        ({"GPUOPS_LOG_FORMAT": "xml"}, "GPUOPS_LOG_FORMAT", "text or json"),
    ],
)
def test_bad_setting_names_the_variable_and_what_it_expects(
    env: dict[str, str], variable: str, expectation: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert variable in str(info.value)
    assert expectation in str(info.value)


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"GPUOPS_DATABASE_URL": "nonsense", "GPUOPS_API_PORT": "x"})
    assert "GPUOPS_DATABASE_URL" in str(info.value) and "GPUOPS_API_PORT" in str(info.value)


def test_secrets_never_appear_in_errors_or_repr() -> None:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-very-secret", "OPENAI_API_KEY": "sk-hidden"})
    assert "xoxb-very-secret" not in repr(settings)
    assert "sk-hidden" not in repr(settings)
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "xoxb-very-secret"


def test_lists_and_urls_are_normalised() -> None:
    settings = load_settings({
        "GPUOPS_SCRAPE_URLS": " http://a:9400/metrics, http://b:9400/metrics ,,",
        "GPUOPS_SLACK_API_URL": "http://127.0.0.1:9999/api",
        "GPUOPS_BROKER_URL": "redis://127.0.0.1:6379/0",
        "GPUOPS_LLM_MODEL": "llama", "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
    })
    assert settings.scrape_urls == ("http://a:9400/metrics", "http://b:9400/metrics")
    assert settings.slack_api_url == "http://127.0.0.1:9999/api/"
    assert not settings.embedded
    assert settings.llm_configured
