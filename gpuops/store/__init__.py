"""The SQL store: models, engine, unit of work, audit trail and migrations."""

from gpuops.store.db import make_engine, make_session_factory, normalise_url
from gpuops.store.uow import UnitOfWork, UnitOfWorkFactory

__all__ = ["UnitOfWork", "UnitOfWorkFactory", "make_engine", "make_session_factory", "normalise_url"]
