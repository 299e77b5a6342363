"""What each task accepts. Messages carry ids and numbers, never objects; anything else is a poison message."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CyclePayload(Payload):
    """One detection cycle of one shard, ending at data time `end` (unix seconds)."""

    shard: int = Field(ge=0)
    shards: int = Field(ge=1)
    end: float = Field(gt=0)

    @model_validator(mode="after")
    def _shard_in_range(self) -> CyclePayload:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} is not below shards={self.shards}")
        return self


class IncidentPayload(Payload):
    incident_id: int = Field(ge=1)


class AgentPayload(Payload):
    """An agent step; `decision` when a human decided ({"action_id", "decision", "by"}) or a soak is over
    ({"hold": "over"})."""

    incident_id: int = Field(ge=1)
    decision: dict[str, str | int] | None = None


class ActionPayload(Payload):
    action_id: int = Field(ge=1)


class NoPayload(Payload):
    pass
