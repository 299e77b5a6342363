"""The one place that builds everything from the settings. The CLI, the workers and the tests call
`bootstrap`; tests pass their own settings and, where the world is out of reach, fakes for the ports.
Outside systems are connected lazily, on first use: start-up needs neither Slack nor the cluster to answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from connectors.kubernetes import ClusterPort, NodeValidations
from connectors.telemetry import PrometheusTelemetry, TelemetrySource
from domain import clock
from gpuops.config import Settings, load_settings
from gpuops.cost.metrics import CostCollector
from gpuops.cost.view import deployment_hours, settings_view
from gpuops.errors import ConfigError
from gpuops.incidents.queries import count_by_status
from gpuops.model_store import DirectoryStore
from gpuops.notify import Notifier, NullNotifier
from gpuops.policy.config import PolicyConfig, load_policy
from gpuops.service_metrics import ServiceMetrics, StoreActivity, store_activity
from gpuops.store import UnitOfWork, make_engine, make_session_factory
from gpuops.store.audit import AuditSigning, audit_key_from, sign_sessions
from runbooks import Catalogue, RunbookSettings, default_catalogue

if TYPE_CHECKING:
    from detectors.pipeline import DetectionCycle
    from gpuops.execution.returns import NodeDiagnostics
    from gpuops.incident_notifications import IncidentNotifications


@dataclass
class Container:
    """Everything a process needs, built once. Ports are built on first use unless given."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    metrics: ServiceMetrics
    policy: PolicyConfig
    runbook_settings: RunbookSettings
    catalogue: Catalogue
    _telemetry: TelemetrySource | None = None
    _cluster: ClusterPort | None = None
    _notifier: Notifier | None = None
    _incident_notifications: IncidentNotifications | None = None
    _closers: list[Any] = field(default_factory=list)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    @property
    def telemetry(self) -> TelemetrySource:
        if self._telemetry is None:
            s = self.settings
            if s.prometheus_url:
                self._telemetry = PrometheusTelemetry(s.prometheus_url)
            elif s.scrape_urls:
                from gpuops.scraping import ScrapeLoop, SharedScrapeTelemetry

                scrape = SharedScrapeTelemetry(list(s.scrape_urls), window_s=max(s.window_seconds * 2, 3600.0))
                loop = ScrapeLoop(scrape, s.step_seconds).start()
                self._closers.extend([loop, scrape])
                self._telemetry = scrape
            else:
                raise ConfigError("no telemetry source: set GPUOPS_PROMETHEUS_URL, or GPUOPS_SCRAPE_URLS for "
                                  "exporters scraped directly")
        return self._telemetry

    @property
    def cluster(self) -> ClusterPort:
        if self._cluster is None:
            from connectors.kubernetes.adapter import KubernetesCluster

            s = self.settings
            cluster = KubernetesCluster.connect(
                api_url=s.kube_api_url, token=s.kube_token.get_secret_value() if s.kube_token else None,
                verify_ssl=s.kube_verify_ssl, kubeconfig=s.kubeconfig, in_cluster=s.kube_in_cluster)
            self._closers.append(cluster)
            self._cluster = cluster
        return self._cluster

    @property
    def cluster_configured(self) -> bool:
        """True when a cluster was given or the settings say where one is (without connecting to it)."""
        s = self.settings
        return self._cluster is not None or bool(s.kube_api_url or s.kubeconfig or s.kube_in_cluster)

    def node_diagnostics(self, clock: Callable[[], float]) -> NodeDiagnostics | None:
        """The node agent's diagnostic a probation asks before a node returns (GPUOPS_NODE_VALIDATION), on a
        cluster that takes NodeValidation requests; None otherwise (telemetry and the cluster decide)."""
        s = self.settings
        if not s.node_validation or not isinstance(self.cluster, NodeValidations):
            return None
        from gpuops.execution.diagnostics import ClusterNodeDiagnostics

        return ClusterNodeDiagnostics(self.cluster, level=s.node_validation_level,
                                      timeout_s=s.node_validation_timeout_seconds, clock=clock)

    @property
    def notifier(self) -> Notifier:
        """Where approval prompts and progress go (Slack when configured; nowhere otherwise)."""
        if self._notifier is None:
            if self.settings.slack_configured:
                from gpuops.slack_notifier import SlackNotifier

                self._notifier = SlackNotifier(uow=self.uow, settings=self.settings)
            else:
                self._notifier = NullNotifier()
        return self._notifier

    @property
    def incident_notifications(self) -> IncidentNotifications:
        """Incident events to PagerDuty and the webhook, as configured (none configured: a no-op)."""
        if self._incident_notifications is None:
            from gpuops.incident_notifications import IncidentNotifications, channels_from

            channels = channels_from(self.settings)
            self._closers.extend(channels)
            self._incident_notifications = IncidentNotifications(uow=self.uow, settings=self.settings,
                                                                 channels=channels)
        return self._incident_notifications

    def new_detection_cycle(self) -> DetectionCycle:
        """A fresh detection cycle: the default stages, plus the learned risk model when `GPUOPS_MODEL_DIR`
        holds a registered one (restored cycles keep the stages they were saved with)."""
        # Imported here: scikit-learn and statsmodels load only in processes that run detection.
        from detectors.pipeline import DetectionCycle, default_stages
        from detectors.registry import ModelRegistry
        from detectors.risk import RISK_MODEL_NAME, risk_stage_from_registry

        stages = default_stages()
        if self.settings.model_dir:
            registry = ModelRegistry(DirectoryStore(Path(self.settings.model_dir)))
            if registry.latest(RISK_MODEL_NAME) is not None:
                stages.append(risk_stage_from_registry(registry))
        return DetectionCycle(stages)

    def add_closer(self, closer: Any) -> None:
        """Something with a close() to call when the container closes (in order of addition)."""
        self._closers.append(closer)

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        self._closers.clear()
        self.engine.dispose()


def bootstrap(settings: Settings | None = None, *, env: Mapping[str, str] | None = None,
              telemetry: TelemetrySource | None = None, cluster: ClusterPort | None = None,
              notifier: Notifier | None = None, policy: PolicyConfig | None = None,
              runbook_settings: RunbookSettings | None = None) -> Container:
    """Build the container. Settings come from the argument, else from `env`, else the environment."""
    settings = settings or load_settings(env)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    audit_key = audit_key_from(key=settings.audit_key.get_secret_value() if settings.audit_key else None,
                               key_file=settings.audit_key_file)
    if audit_key is not None:
        sign_sessions(session_factory, AuditSigning(audit_key, settings.audit_checkpoint_file,
                                                    settings.audit_checkpoint_every))
    metrics = ServiceMetrics()

    def _counts() -> dict[tuple[str, str], int]:
        with session_factory() as session:
            return count_by_status(session)

    metrics.watch_store(_counts)

    def _activity() -> StoreActivity:
        with session_factory() as session:
            return store_activity(session)

    metrics.watch_activity(_activity)

    def _cost() -> dict[str, Any]:
        with session_factory() as session:
            view = settings_view(session, settings, clock.now())
            view["deployments_total"] = deployment_hours(session)
            return view

    metrics.registry.register(CostCollector(_cost))
    runbook_settings = runbook_settings or RunbookSettings()
    return Container(
        settings=settings, engine=engine, session_factory=session_factory, metrics=metrics,
        policy=policy or load_policy(Path(settings.policy_file) if settings.policy_file else None),
        runbook_settings=runbook_settings, catalogue=default_catalogue(runbook_settings),
        _telemetry=telemetry, _cluster=cluster, _notifier=notifier,
    )
