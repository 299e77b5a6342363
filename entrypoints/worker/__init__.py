"""The daemon's tasks on Celery: detection cycles per shard, incident updates, agent steps, execution of
approved actions, verification, and the sweeps that re-enqueue what a lost message left behind. The same
task code runs embedded (one process, eager, no broker) or distributed (Redis broker, N workers, one beat)."""

from entrypoints.worker.app import create_app
from entrypoints.worker.runtime import runtime_of

__all__ = ["create_app", "runtime_of"]
