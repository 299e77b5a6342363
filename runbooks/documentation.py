"""Each runbook's documentation for people: a short markdown page in runbooks/docs/<name>.md beside its
definition (when gpuops uses it, its preconditions, what to know). The definition stays the source of truth for
risk, approvals, verification and rollback; the page explains them."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent / "docs"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # a runbook name (RunbookDefinition's pattern)


def doc_path(name: str) -> Path:
    return DOCS / f"{name}.md"


def doc_text(name: str) -> str | None:
    """The runbook's markdown page, or None when it has none (or the name could not be a runbook's)."""
    if not _NAME.match(name):
        return None
    path = doc_path(name)
    return path.read_text(encoding="utf-8") if path.is_file() else None
