"""One pipeline: the use cases the service runs (`service`), the steps they hand on (`steps`), and the
dispatchers that run those steps: on the broker, on the embedded daemon's thread, or in order (`dispatch`)."""

from gpuops.pipeline.dispatch import BrokerDispatcher, Dispatcher, OrderedDispatcher, ThreadedDispatcher
from gpuops.pipeline.service import InvalidStep, Pipeline, SweepOutcome, describe, threaded_pipeline
from gpuops.pipeline.steps import QUEUE_OF, QUEUES, Step

__all__ = ["QUEUES", "QUEUE_OF", "BrokerDispatcher", "Dispatcher", "InvalidStep",
           "OrderedDispatcher", "Pipeline", "Step", "SweepOutcome",
           "ThreadedDispatcher", "describe", "threaded_pipeline"]
