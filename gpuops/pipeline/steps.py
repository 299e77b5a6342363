"""The pipeline's steps and what each accepts. A step is a message (a Celery task in distributed mode): it
carries ids and numbers, never objects; anything else is a poison message."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Step(StrEnum):
    """The use cases a dispatcher can be asked to run later; the values are the Celery task names."""

    DETECT = "gpuops.detect"
    INCIDENT_CHANGED = "gpuops.incident_update"
    AGENT_STEP = "gpuops.agent_step"
    EXECUTE = "gpuops.execute_action"
    VERIFY = "gpuops.verify_action"
    SWEEP = "gpuops.sweep"
    RETURN_NODE = "gpuops.return_node"
    AUTOSCALE = "gpuops.autoscale"


CYCLES_QUEUE = "gpuops.cycles"
INCIDENTS_QUEUE = "gpuops.incidents"
ACTIONS_QUEUE = "gpuops.actions"
QUEUES = (CYCLES_QUEUE, INCIDENTS_QUEUE, ACTIONS_QUEUE)
QUEUE_OF = {Step.DETECT: CYCLES_QUEUE, Step.INCIDENT_CHANGED: INCIDENTS_QUEUE, Step.AGENT_STEP: INCIDENTS_QUEUE,
            Step.SWEEP: INCIDENTS_QUEUE, Step.EXECUTE: ACTIONS_QUEUE, Step.VERIFY: ACTIONS_QUEUE,
            Step.RETURN_NODE: ACTIONS_QUEUE, Step.AUTOSCALE: CYCLES_QUEUE}


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
    """An agent step; `decision` when a human decided ({"action_id", "decision", "by"}), an approval expired
    ({"action_id", "decision": "expired"}), a soak is over ({"hold": "over"}) or another executor finished
    the action the thread waits for ({"executed": action_id})."""

    incident_id: int = Field(ge=1)
    decision: dict[str, str | int] | None = None


class ActionPayload(Payload):
    action_id: int = Field(ge=1)


class ProbationPayload(Payload):
    """A node's probation to decide or move on (see gpuops.execution.returns)."""

    probation_id: int = Field(ge=1)


class NoPayload(Payload):
    pass


PAYLOADS: dict[Step, type[Payload]] = {Step.DETECT: CyclePayload, Step.INCIDENT_CHANGED: IncidentPayload,
                                       Step.AGENT_STEP: AgentPayload, Step.EXECUTE: ActionPayload,
                                       Step.VERIFY: ActionPayload, Step.SWEEP: NoPayload,
                                       Step.RETURN_NODE: ProbationPayload, Step.AUTOSCALE: NoPayload}
