"""Versioned model artefacts: each version keeps its training-data hash, metrics and creation time.

The registry works over any byte store (a `MutableMapping[str, bytes]`): an in-memory dict in tests, a
directory (`gpuops.model_store.DirectoryStore`) or a database table in the service. Artefacts are
pickles of our own models, checked against the sha256 recorded at registration before unpickling.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class RegistryError(Exception):
    """A missing, corrupt or unreadable model version; the message names it."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    created_at: str
    data_hash: str
    artefact_sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"


class ModelRegistry:
    def __init__(self, store: MutableMapping[str, bytes]) -> None:
        self.store = store

    def register(self, name: str, model: object, *, data_hash: str, metrics: dict[str, Any],
                 params: dict[str, Any] | None = None, created_at: datetime | None = None) -> ModelVersion:
        """Store `model` as the next version of `name`."""
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        existing = self.versions(name)
        version = ModelVersion(
            name=name, version=(existing[-1].version + 1) if existing else 1,
            created_at=(created_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            data_hash=data_hash, artefact_sha256=hashlib.sha256(blob).hexdigest(),
            metrics=metrics, params=params or {})
        prefix = f"{name}/{version.version:06d}"
        self.store[f"{prefix}/model.pkl"] = blob
        self.store[f"{prefix}/meta.json"] = json.dumps(asdict(version), sort_keys=True).encode()
        return version

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, oldest first."""
        out = []
        for key in self.store:
            if key.startswith(f"{name}/") and key.endswith("/meta.json"):
                try:
                    out.append(ModelVersion(**json.loads(self.store[key])))
                except (ValueError, TypeError) as exc:
                    raise RegistryError(f"unreadable metadata {key}: {exc}") from exc
        return sorted(out, key=lambda v: v.version)

    def latest(self, name: str) -> ModelVersion | None:
        found = self.versions(name)
        return found[-1] if found else None

    def load(self, name: str, version: int | None = None) -> tuple[Any, ModelVersion]:
        """The model object and its metadata (latest version by default)."""
        found = {v.version: v for v in self.versions(name)}
        if not found:
            raise RegistryError(f"no model named {name!r} in the registry")
        chosen = found.get(version if version is not None else max(found))
        if chosen is None:
            raise RegistryError(f"{name} has no version {version}; versions: {sorted(found)}")
        blob = self.store.get(f"{name}/{chosen.version:06d}/model.pkl")
        if blob is None or hashlib.sha256(blob).hexdigest() != chosen.artefact_sha256:
            raise RegistryError(f"artefact of {chosen.tag} is missing or does not match its recorded sha256")
        return pickle.loads(blob), chosen
