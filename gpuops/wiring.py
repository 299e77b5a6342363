"""The one place that builds everything from the settings. The CLI, the workers and the tests call
`bootstrap`; tests pass their own settings (and, later, fakes for the connectors)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gpuops.config import Settings, load_settings
from gpuops.incidents.queries import count_by_status
from gpuops.service_metrics import ServiceMetrics
from gpuops.store import UnitOfWork, make_engine, make_session_factory


@dataclass
class Container:
    """Everything a process needs, built once."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    metrics: ServiceMetrics

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(settings: Settings | None = None, *, env: Mapping[str, str] | None = None) -> Container:
    """Build the container. Settings come from the argument, else from `env`, else the environment."""
    settings = settings or load_settings(env)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    metrics = ServiceMetrics()

    def _counts() -> dict[tuple[str, str], int]:
        with session_factory() as session:
            return count_by_status(session)

    metrics.watch_store(_counts)
    return Container(settings=settings, engine=engine, session_factory=session_factory, metrics=metrics)
