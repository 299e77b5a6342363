"""The annotations and names gpuops writes on cluster objects (and the twin understands)."""

from __future__ import annotations

CORDONED_BY = "gpuops.io/cordoned-by"
"""On a Node gpuops cordoned: always CORDON_OWNER. Its absence means someone else cordoned it."""
CORDON_OWNER = "gpuops"
CORDON_REASON = "gpuops.io/cordon-reason"
CORDON_INCIDENT = "gpuops.io/cordon-incident"
CORDON_ANNOTATIONS = (CORDONED_BY, CORDON_REASON, CORDON_INCIDENT)

CHECKPOINT_REQUESTED = "gpuops.io/checkpoint-requested"
"""On a training Pod: a request id asking the job to write a checkpoint now."""
CHECKPOINT_DONE = "gpuops.io/checkpoint-done"
"""Set by the job to the request id it has checkpointed for."""

GPU_INDICES = "sim.gpuops.io/gpus"
"""Optional hint on a Pod: comma-separated GPU indices it holds on its node (the fleet twin sets it)."""
MIRROR_POD = "kubernetes.io/config.mirror"

REQUEST_GROUP = "gpuops.io"
REQUEST_VERSION = "v1alpha1"
GPU_RESETS = "gpuresets"
NODE_REBOOTS = "nodereboots"
NODE_VALIDATIONS = "nodevalidations"
GPU_FENCES = "gpufences"
NODE_LABEL = "gpuops.io/node"
"""On every request gpuops creates: its spec.nodeName, so an agent on a cluster without selectable fields on custom
resources (before Kubernetes 1.31) selects its own by label."""
REQUEST_PLURALS = {"GPUReset": GPU_RESETS, "NodeReboot": NODE_REBOOTS, "NodeValidation": NODE_VALIDATIONS,
                   "GPUFence": GPU_FENCES}
"""The node agent's request kinds and their plurals (runbooks/NODE_AGENT.md)."""
GPU_RESOURCE = "nvidia.com/gpu"
