"""Which job a pod belongs to, from its name: one rule shared by the detectors (grouping a job's GPUs), the agent
(finding a job's pods wherever they run) and policy (a job-level incident's scope is its job's pods).

A pod's job is `namespace/base`, where `base` is its pod name without the parts Kubernetes and the training
operators add per pod. A Deployment's pod is its Deployment: the name less `-<replicaset hash>-<5 chars>`
(`infer-7d9f8c6b5-x2k4z` -> `infer`, `serve-04-7d9f8c6b5-x2k4z` -> `serve-04`: the digits belong to the
Deployment's own name, since a Deployment adds no ordinal). Any other pod loses, in this order:
1. a Job's `-<5 chars>` random suffix (`prep-x2k4z` -> `prep`);
2. a trailing replica ordinal `-<digits>` (StatefulSets, indexed Jobs, PyTorchJob/MPIJob replicas);
3. a trailing replica role `-worker`, `-master`, `-launcher`, `-chief`, `-ps`, `-evaluator`.
So `train-0-worker-3` and `train-0-master-0` are both job `ml/train-0`.
"""

from __future__ import annotations

import re

# Kubernetes' safe alphabet (rand.SafeEncodeString): a ReplicaSet's pod-template hash and a generated name's
# random part use only these characters.
SAFE_CHARS = "[bcdfghjklmnpqrstvwxz2456789]"
DEPLOYMENT_SUFFIX = re.compile(rf"-{SAFE_CHARS}{{6,10}}-{SAFE_CHARS}{{5}}$")  # a Deployment's replica pod
_RANDOM_SUFFIX = re.compile(rf"-{SAFE_CHARS}{{5}}$")
_ORDINAL = re.compile(r"-\d+$")
_ROLE = re.compile(r"-(worker|master|launcher|chief|ps|evaluator)$")


def job_of(pod: str, namespace: str) -> str | None:
    """The job a pod belongs to, or None for no pod."""
    if not pod:
        return None
    if (deployment := DEPLOYMENT_SUFFIX.sub("", pod)) != pod and deployment:
        return f"{namespace}/{deployment}"
    base = _RANDOM_SUFFIX.sub("", pod)
    base = _ORDINAL.sub("", base)
    base = _ROLE.sub("", base) or pod
    return f"{namespace}/{base}"
