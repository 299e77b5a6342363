"""The one typed settings object. Built once by the wiring from the environment (or a mapping in tests)
and passed down; a missing or malformed value stops start-up with a message naming the variable."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gpuops.errors import ConfigError

SUPPORTED_DATABASES = ("sqlite", "postgresql")
ROLES = ("viewer", "approver", "admin")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
# What a value shown in an error message may carry that must not reach a log: a URL's password, a credential
# in a query string, a Slack or OpenAI token.
_SECRETS = (
    (re.compile(r"(://[^/@\s:'\"]*):[^@\s'\"]*@"), r"\1:***@"),
    (re.compile(r"(?i)\b((?:password|passwd|pwd|[a-z_]*token|secret|[a-z_]*key|auth|signature|sig)=)[^&\s'\"]+"),
     r"\1***"),
    (re.compile(r"\b(xox[a-z]|xapp|sk)-[A-Za-z0-9_-]+"), r"\1-***"),
)

_EXPECTATIONS: dict[str, str] = {
    "database_url": "a SQLAlchemy URL such as sqlite:///./gpuops.db or postgresql+psycopg://user:pass@host:5432/gpuops",
    "broker_url": "a Redis URL such as redis://127.0.0.1:6379/0, or unset for embedded mode",
    "prometheus_url": "an http(s) URL of a Prometheus server, e.g. http://127.0.0.1:9090",
    "dry_run": "true or false",
    "api_port": "a TCP port number between 1 and 65535",
    "log_format": "text or json",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "approvers": "a comma-separated list of Slack user ids who may decide in Slack without a linked dashboard user "
                 "(each counts as a person of their own; prefer GPUOPS_SLACK_USERS); dashboard user names listed "
                 "here change nothing, their role in GPUOPS_USERS decides",
    "slack_users": "a comma-separated list of SlackUserId:user linking each Slack id to a dashboard user, e.g. "
                   "U0123ABCD:alice,U0456EFGH:bob",
    "slack_api_url": "an http(s) base URL of Slack's Web API ending in /api/",
    "slack_timeout_seconds": "a number of seconds > 0 (how long one Slack Web API call may take)",
    "openai_base_url": "an http(s) URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1",
    "kube_api_url": "an http(s) URL of a Kubernetes API server, e.g. https://10.0.0.1:6443",
    "scrape_urls": "a comma-separated list of exporter /metrics URLs",
    "step_seconds": "a number of seconds > 0 (the scrape interval)",
    "cycle_seconds": "a number of seconds > 0",
    "window_seconds": "a number of seconds > 0",
    "shards": "a whole number >= 1",
    "claim_ttl_seconds": "a number of seconds > 0 (longer than the slowest runbook)",
    "visibility_timeout_seconds": "a number of seconds > 0 (longer than the slowest task), or unset",
    "task_max_retries": "a whole number >= 0",
    "task_time_limit_seconds": "a number of seconds > 0 (the longest a task other than execution may run)",
    "sweep_seconds": "a number of seconds > 0",
    "worker_wiring": "module:function returning a wiring Container for the given Settings",
    "users": "dashboard users separated by ';' or new lines, each name:role:hash with role viewer, approver or "
             "admin and hash from `gpuops users hash-password`",
    "users_file": "a path to a file with one name:role:hash dashboard user per line",
    "session_secret": "a random string of at least 32 characters that signs session cookies",
    "session_cookie_secure": "true or false (default: true when GPUOPS_DASHBOARD_URL is https)",
    "trusted_proxy_header": "an HTTP header name set by the reverse proxy to the signed-in user, e.g. X-Forwarded-User",
    "proxy_roles": "a comma-separated list of user:role for users signed in by the proxy; *:role for anyone else",
    "max_body_bytes": "a whole number of bytes >= 1024 (the largest request body the web service reads)",
    "sign_in_max_failures": "a whole number >= 1 (failed sign-ins of one user name within the window)",
    "sign_in_max_failures_per_client": "a whole number >= 1 (failed sign-ins from one client address within the "
                                       "window)",
    "sign_in_window_seconds": "a number of seconds > 0 (how long a failed sign-in counts)",
    "password_checks_max": "a whole number >= 1 (password verifications running at once)",
    "event_streams_per_user": "a whole number >= 1 (live-update streams one user may hold open)",
    "alertmanager_token": "a random string of at least 16 characters that Alertmanager sends as its bearer token",
    "alertmanager_token_file": "a path to a file holding the bearer token Alertmanager sends (at least 16 "
                               "characters)",
    "grafana_url": "an http(s) base URL of Grafana, e.g. https://grafana.example.com",
    "grafana_dashboard_uid": "the UID of the Grafana dashboard an incident links to (letters, digits, - and _)",
    "grafana_margin_seconds": "a number of seconds >= 0 (shown before an incident opened and after it ended)",
    "gpu_hour_price": "a price > 0 of one GPU-hour (the cost view's unit; default 12.29, AWS p5.48xlarge on-demand "
                      "$98.32/h for 8 H100)",
    "gpu_hour_prices": "a comma-separated list of MODEL=PRICE per GPU-hour matched against dcgm-exporter's modelName, "
                       "e.g. H100=12.29,A100=4.10 (a model not listed costs GPUOPS_GPU_HOUR_PRICE)",
    "idle_after_seconds": "a number of seconds > 0 (how long an allocated GPU stays under the idle utilisation "
                          "before the cost view lists it)",
    "idle_utilisation_percent": "a number between 0 and 100 (GPU utilisation below which an allocated GPU is idle)",
    "installation": "a short name of this gpuops installation (letters, digits, '.', '_' and '-'; at most 64), the "
                    "prefix of every incident's deduplication key outside gpuops",
    "notify_min_severity": "info, warning or critical (the least severe incident sent to PagerDuty and the webhook)",
    "pagerduty_events_url": "an http(s) URL of PagerDuty's Events API v2 enqueue endpoint, e.g. "
                            "https://events.eu.pagerduty.com/v2/enqueue",
    "pagerduty_routing_key": "the 32-character integration key of a PagerDuty Events API v2 integration",
    "webhook_url": "an http(s) URL that receives incident events as signed JSON POSTs",
    "webhook_secret": "a random string of at least 16 characters that signs webhook requests (HMAC-SHA256)",
    "notify_timeout_seconds": "a number of seconds > 0 (how long one PagerDuty or webhook request may take)",
}


class DashboardUser(BaseModel):
    """A dashboard user from configuration; the password is stored as an argon2 hash only."""

    model_config = {"frozen": True}

    name: str
    role: Literal["viewer", "approver", "admin"]
    password_hash: str = Field(repr=False)


def parse_users(text: str) -> tuple[DashboardUser, ...]:
    """`name:role:hash` entries separated by ';' or new lines; blank entries and `#` comments are skipped."""
    users: list[DashboardUser] = []
    for raw in re.split(r"[;\n]", text):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, _, rest = entry.partition(":")
        role, _, digest = rest.partition(":")
        if not name or role not in ROLES or not digest.startswith("$argon2"):
            raise ValueError(f"bad user entry {name or entry[:20]!r}: expected {_EXPECTATIONS['users']}")
        users.append(DashboardUser(name=name, role=role, password_hash=digest))
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise ValueError("a user name appears twice")
    return tuple(users)



def _comma_list(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value)


def _http_url(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected {what}")
    return value


class Settings(BaseSettings):
    """Every setting gpuops reads. Environment names are the field names upper-cased with `GPUOPS_`,
    except the standard OpenAI and Slack variables, which keep their usual names."""

    model_config = SettingsConfigDict(env_prefix="GPUOPS_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///./gpuops.db"
    broker_url: str | None = None
    prometheus_url: str | None = None
    dry_run: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    dashboard_url: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    llm_model: str | None = None

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_channel: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_timeout_seconds: float = Field(default=5.0, gt=0)
    approvers: Annotated[tuple[str, ...], NoDecode] = ()  # unlinked Slack ids who may decide (see slack_person)
    slack_users: Annotated[tuple[tuple[str, str], ...], NoDecode] = ()

    kube_api_url: str | None = None
    kube_token: SecretStr | None = None
    kubeconfig: str | None = None
    kube_in_cluster: bool = False
    kube_verify_ssl: bool = True
    node_validation: bool = False  # a node returns to service only after the node agent's DCGM diag passed
    node_validation_level: int = Field(default=2, ge=1, le=4)
    node_validation_timeout_seconds: float = Field(default=3600.0, gt=0)
    scrape_urls: Annotated[tuple[str, ...], NoDecode] = ()
    step_seconds: float = Field(default=15.0, gt=0)
    cycle_seconds: float = Field(default=30.0, gt=0)
    window_seconds: float = Field(default=900.0, gt=0)
    shards: int = Field(default=1, ge=1)
    policy_file: str | None = None
    model_dir: str | None = None
    claim_ttl_seconds: float = Field(default=1800.0, gt=0)
    visibility_timeout_seconds: float | None = Field(default=None, gt=0)
    task_max_retries: int = Field(default=5, ge=0)
    task_time_limit_seconds: float = Field(default=600.0, gt=0)
    sweep_seconds: float = Field(default=30.0, gt=0)
    worker_wiring: str | None = None
    audit_key: SecretStr | None = None
    audit_key_file: str | None = None
    audit_checkpoint_file: str | None = None
    audit_checkpoint_every: int = Field(default=1000, ge=1)

    users: Annotated[tuple[DashboardUser, ...], NoDecode] = ()
    users_file: str | None = None
    session_secret: SecretStr | None = None
    session_cookie_secure: bool | None = None
    trusted_proxy_header: str | None = None
    proxy_roles: Annotated[tuple[str, ...], NoDecode] = ()
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    sign_in_max_failures: int = Field(default=5, ge=1)
    sign_in_max_failures_per_client: int = Field(default=20, ge=1)
    sign_in_window_seconds: float = Field(default=900.0, gt=0)
    password_checks_max: int = Field(default=4, ge=1)
    event_streams_per_user: int = Field(default=4, ge=1)
    alertmanager_token: SecretStr | None = None
    alertmanager_token_file: str | None = None
    grafana_url: str | None = None
    grafana_dashboard_uid: str = "gpuops-fleet"
    grafana_margin_seconds: float = Field(default=900.0, ge=0)
    gpu_hour_price: float = Field(default=12.29, gt=0)
    gpu_hour_prices: Annotated[tuple[tuple[str, float], ...], NoDecode] = ()
    idle_after_seconds: float = Field(default=3600.0, gt=0)
    idle_utilisation_percent: float = Field(default=5.0, gt=0, le=100)
    installation: str = Field(default="gpuops", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    notify_min_severity: Literal["info", "warning", "critical"] = "warning"
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_routing_key_file: str | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_secret_file: str | None = None
    notify_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"expected {_EXPECTATIONS['database_url']}") from exc
        if url.get_backend_name() not in SUPPORTED_DATABASES:
            raise ValueError(f"expected {_EXPECTATIONS['database_url']} (backend {url.get_backend_name()!r} "
                             f"is not supported)")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError(f"expected {_EXPECTATIONS['broker_url']}")
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        return _http_url(value, _EXPECTATIONS["prometheus_url"])

    @field_validator("openai_base_url")
    @classmethod
    def _openai_base_url(cls, value: str | None) -> str | None:
        return _http_url(value, _EXPECTATIONS["openai_base_url"])

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api_url(cls, value: str) -> str:
        url = _http_url(value, _EXPECTATIONS["slack_api_url"])
        assert url is not None
        return url if url.endswith("/") else url + "/"

    @field_validator("grafana_url")
    @classmethod
    def _grafana_url(cls, value: str | None) -> str | None:
        url = _http_url(value, _EXPECTATIONS["grafana_url"])
        return url.rstrip("/") if url else None

    @field_validator("pagerduty_events_url")
    @classmethod
    def _pagerduty_events_url(cls, value: str) -> str:
        url = _http_url(value, _EXPECTATIONS["pagerduty_events_url"])
        assert url is not None
        return url

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return _http_url(value, _EXPECTATIONS["webhook_url"])

    @model_validator(mode="after")
    def _notification_secrets(self) -> Settings:
        for field, least in (("pagerduty_routing_key", 1), ("webhook_secret", 16)):
            secret = _secret_or_file(self, field)
            if secret is not None and len(secret.get_secret_value()) < least:
                raise ValueError(f"{_env_name(field)}: too short; expected {_EXPECTATIONS[field]}")
            object.__setattr__(self, field, secret)
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("GPUOPS_WEBHOOK_URL is set without GPUOPS_WEBHOOK_SECRET (or GPUOPS_WEBHOOK_SECRET_FILE); "
                             "set a secret so receivers can verify what gpuops sends")
        return self

    @field_validator("grafana_dashboard_uid")
    @classmethod
    def _grafana_dashboard_uid(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", value):
            raise ValueError(f"expected {_EXPECTATIONS['grafana_dashboard_uid']}")
        return value

    @field_validator("kube_api_url")
    @classmethod
    def _kube_api_url(cls, value: str | None) -> str | None:
        return _http_url(value, _EXPECTATIONS["kube_api_url"])

    @field_validator("scrape_urls", mode="before")
    @classmethod
    def _scrape_urls(cls, value: Any) -> tuple[str, ...]:
        urls = _comma_list(value)
        for url in urls:
            _http_url(url, _EXPECTATIONS["scrape_urls"])
        return urls

    @field_validator("gpu_hour_prices", mode="before")
    @classmethod
    def _gpu_hour_prices(cls, value: Any) -> tuple[tuple[str, float], ...]:
        if not isinstance(value, str) and value is not None:
            return tuple((str(model), float(price)) for model, price in value)
        prices: list[tuple[str, float]] = []
        for entry in _comma_list(value):
            model, _, price = (part.strip() for part in entry.partition("="))
            try:
                amount = float(price)
            except ValueError:
                amount = -1.0
            if not model or not amount > 0 or amount == float("inf"):
                raise ValueError(f"bad entry {entry!r}; expected {_EXPECTATIONS['gpu_hour_prices']}")
            prices.append((model, amount))
        return tuple(prices)

    @field_validator("approvers", mode="before")
    @classmethod
    def _approvers(cls, value: Any) -> tuple[str, ...]:
        return _comma_list(value)

    @field_validator("slack_users", mode="before")
    @classmethod
    def _slack_users(cls, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, str) and value is not None:
            return tuple((str(slack_id), str(name)) for slack_id, name in value)
        links: list[tuple[str, str]] = []
        for entry in _comma_list(value):
            slack_id, _, name = (part.strip() for part in entry.partition(":"))
            if not _SLACK_ID.match(slack_id) or not name:
                raise ValueError(f"bad entry {entry!r}; expected {_EXPECTATIONS['slack_users']}")
            links.append((slack_id, name))
        return tuple(links)

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        if value is None or value == "":
            return ()
        return parse_users(value) if isinstance(value, str) else value

    @field_validator("session_secret")
    @classmethod
    def _session_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(f"too short; expected {_EXPECTATIONS['session_secret']}")
        return value

    @field_validator("alertmanager_token")
    @classmethod
    def _alertmanager_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError(f"too short; expected {_EXPECTATIONS['alertmanager_token']}")
        return value

    @model_validator(mode="after")
    def _alertmanager_token_from_file(self) -> Settings:
        if not self.alertmanager_token_file:
            return self
        try:
            text = Path(self.alertmanager_token_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"GPUOPS_ALERTMANAGER_TOKEN_FILE: cannot read {self.alertmanager_token_file}: "
                             f"{exc.strerror}") from exc
        if self.alertmanager_token is not None and self.alertmanager_token.get_secret_value() != text:
            raise ValueError("GPUOPS_ALERTMANAGER_TOKEN and GPUOPS_ALERTMANAGER_TOKEN_FILE are both set; set one")
        if len(text) < 16:
            raise ValueError("GPUOPS_ALERTMANAGER_TOKEN_FILE: the token is too short; expected "
                             f"{_EXPECTATIONS['alertmanager_token_file']}")
        object.__setattr__(self, "alertmanager_token", SecretStr(text))
        return self

    @field_validator("trusted_proxy_header")
    @classmethod
    def _trusted_proxy_header(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not _HEADER_NAME.match(value):
            raise ValueError(f"expected {_EXPECTATIONS['trusted_proxy_header']}")
        return value

    @field_validator("proxy_roles", mode="before")
    @classmethod
    def _proxy_roles(cls, value: Any) -> tuple[str, ...]:
        entries = _comma_list(value)
        for entry in entries:
            name, _, role = entry.partition(":")
            if not name or role not in ROLES:
                raise ValueError(f"bad entry {entry!r}; expected {_EXPECTATIONS['proxy_roles']}")
        return entries

    @model_validator(mode="after")
    def _users_from_file(self) -> Settings:
        if self.users_file:
            try:
                text = Path(self.users_file).read_text()
            except OSError as exc:
                raise ValueError(f"GPUOPS_USERS_FILE: cannot read {self.users_file}: {exc.strerror}") from exc
            merged = list(self.users)
            for user in parse_users(text):
                if user in merged:  # the same entry (validation may run on already merged settings)
                    continue
                if any(u.name == user.name for u in merged):
                    raise ValueError(f"GPUOPS_USERS_FILE: user {user.name!r} is also in GPUOPS_USERS")
                merged.append(user)
            object.__setattr__(self, "users", tuple(merged))
        return self

    @model_validator(mode="after")
    def _slack_links(self) -> Settings:
        seen: set[str] = set()
        for slack_id, name in self.slack_users:
            if slack_id in seen:
                raise ValueError(f"GPUOPS_SLACK_USERS: Slack id {slack_id} is linked twice; link each Slack id to "
                                 "one dashboard user")
            seen.add(slack_id)
            if self.person_role(name) is None:
                raise ValueError(f"GPUOPS_SLACK_USERS: {slack_id} is linked to {name!r}, who is not a dashboard "
                                 "user; add them to GPUOPS_USERS (or name them in GPUOPS_PROXY_ROLES) or fix the "
                                 "link")
        return self

    def person_role(self, name: str) -> str | None:
        """The role of a person: their GPUOPS_USERS entry, else their own GPUOPS_PROXY_ROLES entry (the `*` entry
        names nobody, so it links no Slack id)."""
        user = next((u for u in self.users if u.name == name), None)
        if user is not None:
            return user.role
        return dict(entry.split(":", 1) for entry in self.proxy_roles).get(name)

    def slack_person(self, slack_id: str) -> str | None:
        """The dashboard user a Slack id is linked to in GPUOPS_SLACK_USERS, if any."""
        return dict(self.slack_users).get(slack_id)

    def unlinked_approvers(self) -> tuple[str, ...]:
        """Slack ids in GPUOPS_APPROVERS that no GPUOPS_SLACK_USERS entry links to a dashboard user: each decides
        as a person of their own (`slack:<id>`), so the same human through the dashboard counts again."""
        return tuple(a for a in self.approvers if _SLACK_ID.match(a) and self.slack_person(a) is None)

    def proxy_role(self, user: str) -> str | None:
        """The role of a user the trusted proxy signed in: their entry, else the `*` entry, else none."""
        roles = dict(entry.split(":", 1) for entry in self.proxy_roles)
        return roles.get(user) or roles.get("*")

    @property
    def cookie_secure(self) -> bool:
        if self.session_cookie_secure is not None:
            return self.session_cookie_secure
        return bool(self.dashboard_url and self.dashboard_url.startswith("https://"))

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: everything runs in one process."""
        return self.broker_url is None

    @property
    def slack_configured(self) -> bool:
        """True when approval prompts go to Slack: a bot token and a channel are set."""
        return self.slack_bot_token is not None and bool(self.slack_channel)

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_model) and (self.openai_api_key is not None or self.openai_base_url is not None)


def _secret_or_file(settings: Settings, field: str) -> SecretStr | None:
    """A secret setting, or the stripped contents of the file its `<field>_file` setting names (not both)."""
    value: SecretStr | None = getattr(settings, field)
    path: str | None = getattr(settings, f"{field}_file")
    if not path:
        return value
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{_env_name(field)}_FILE: cannot read {path}: {exc.strerror}") from exc
    if value is not None and value.get_secret_value() != text:
        raise ValueError(f"{_env_name(field)} and {_env_name(field)}_FILE are both set; set one")
    return SecretStr(text)


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"GPUOPS_{field.upper()}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the process environment, or from `env` when given (tests).

    Raises ConfigError naming every bad variable and what it expects.
    """
    try:
        if env is None:
            return Settings()
        data: dict[str, Any] = {}
        for name in Settings.model_fields:
            key = _env_name(name)
            if key in env:
                data[name] = env[key]
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a check across settings: its message names the variables
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            var = _env_name(field) if field in Settings.model_fields else field
            expected = _EXPECTATIONS.get(field)
            detail = error["msg"].removeprefix("Value error, ")
            if expected and expected not in detail:
                detail = f"{detail}; expected {expected}"
            value = error.get("input")
            shown = "" if field.endswith(("token", "secret", "key", "users")) else f" (got {value!r})"
            problems.append(f"{var}: {detail}{shown}")
        raise ConfigError(redact_secrets("invalid configuration: " + "; ".join(problems))) from exc


def redact_secrets(text: str) -> str:
    """`text` with passwords in URLs, credentials in query strings and API tokens replaced by `***`."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text
