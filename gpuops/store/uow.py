"""The unit of work: one transaction around a session. Service functions take it and never commit on
their own; the caller commits once, and callbacks registered with `on_commit` run only after that."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gpuops.errors import StoreError

log = logging.getLogger(__name__)


class UnitOfWork:
    """`with UnitOfWork(factory) as uow: ...; uow.commit()`. Leaving without commit rolls back."""

    session: Session

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory
        self._after_commit: list[Callable[[], None]] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        self._after_commit = []
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() rolls back whatever was not committed and detaches objects without expiring them,
        # so values read inside the block stay readable after it.
        self.session.close()
        if isinstance(exc, OperationalError):
            raise StoreError(f"the database is unavailable or refused the operation: {exc.orig}") from exc

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` after the transaction commits (e.g. enqueue a task for a row just written)."""
        self._after_commit.append(callback)

    def flush(self) -> None:
        self.session.flush()

    def commit(self) -> None:
        self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        self.session.rollback()
        self._after_commit = []


UnitOfWorkFactory = Callable[[], UnitOfWork]
