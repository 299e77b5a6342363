"""The cluster port's fake, its eviction retry, and the adapter's error translation."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from connectors.kubernetes import (
    AccessDenied,
    AlreadyExists,
    ClusterError,
    ClusterUnavailable,
    Conflict,
    DisruptionBlocked,
    InMemoryCluster,
    InvalidRequest,
    NotCordonedByGpuops,
    NotFound,
    Taint,
)
from connectors.kubernetes.adapter import node_request, translate
from connectors.kubernetes.annotations import CORDON_REASON, CORDONED_BY
from connectors.kubernetes.port import retry_while_blocked


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


@pytest.fixture
def cluster(time_: FakeTime) -> InMemoryCluster:
    c = InMemoryCluster(clock=time_.clock, sleep=time_.sleep)
    c.add_node("gpu-node-001")
    c.add_pod("ml", "train-0", "gpu-node-001", gpus=8)
    return c


def test_cordon_marks_ownership_and_uncordon_undoes_only_ours(cluster: InMemoryCluster) -> None:
    node = cluster.cordon("gpu-node-001", reason="xid79", incident="inc-1")
    assert node.cordoned_by_gpuops and node.annotations[CORDON_REASON] == "xid79"
    assert not cluster.uncordon("gpu-node-001").unschedulable
    assert CORDONED_BY not in cluster.get_node("gpu-node-001").annotations
    cluster.add_node("gpu-node-002", unschedulable=True)
    assert not cluster.cordon("gpu-node-002", reason="xid79").cordoned_by_gpuops
    with pytest.raises(NotCordonedByGpuops):
        cluster.uncordon("gpu-node-002")
    assert cluster.actions == [("cordon", "gpu-node-001"), ("uncordon", "gpu-node-001")]


def test_eviction_retries_while_blocked_then_succeeds(cluster: InMemoryCluster, time_: FakeTime) -> None:
    cluster.block_evictions("ml", "train-0", times=3)
    assert cluster.evict_pod("ml", "train-0", deadline_s=60, retry_interval_s=5) == "evicted"
    assert time_.sleeps == [5, 5, 5]
    assert cluster.evict_pod("ml", "train-0") == "already_gone"


def test_eviction_gives_up_at_the_deadline_and_keeps_the_pod(
    cluster: InMemoryCluster, time_: FakeTime
) -> None:
    cluster.block_evictions("ml", "train-0")
    with pytest.raises(DisruptionBlocked, match="after 12s and 4 attempts"):
        cluster.evict_pod("ml", "train-0", deadline_s=12, retry_interval_s=4)
    assert time_.now == 12 and cluster.get_pod("ml", "train-0").name == "train-0"


def test_retry_rejects_nonsense_intervals(time_: FakeTime) -> None:
    with pytest.raises(ValueError):
        retry_while_blocked(
            lambda: 1, deadline_s=5, retry_interval_s=0, what="x", clock=time_.clock, sleep=time_.sleep
        )


def test_other_errors_are_not_retried(time_: FakeTime) -> None:
    calls = []

    def attempt() -> int:
        calls.append(1)
        raise ClusterUnavailable("down")

    with pytest.raises(ClusterUnavailable):
        retry_while_blocked(
            attempt, deadline_s=60, retry_interval_s=1, what="x", clock=time_.clock, sleep=time_.sleep
        )
    assert calls == [1]


def test_taints_checkpoints_scale_requests_events(cluster: InMemoryCluster) -> None:
    taint = Taint("gpuops.io/bad-gpu", "NoSchedule", "3")
    assert cluster.add_taint("gpu-node-001", taint).taints == (taint,)
    assert cluster.remove_taint("gpu-node-001", "gpuops.io/bad-gpu").taints == ()
    assert not cluster.request_checkpoint("ml", "train-0", "r1").checkpoint_done
    assert cluster.answer_checkpoint("ml", "train-0").checkpoint_done
    with pytest.raises(NotFound):
        cluster.get_scale("ml", "train")
    reset = cluster.request_gpu_reset("gpu-node-001", 3, name="r")
    assert cluster.request_gpu_reset("gpu-node-001", 3, name="r") == reset
    with pytest.raises(AlreadyExists):
        cluster.request_gpu_reset("gpu-node-001", 4, name="r")
    assert cluster.finish_request("r").finished
    with pytest.raises(NotFound):
        cluster.get_node_reboot("r")
    cluster.post_event(kind="Node", name="gpu-node-001", reason="R", message="m")
    assert cluster.events[0].reason == "R"
    assert cluster.list_pods("gpu-node-404") == []


def _api_error(
    status: int, reason: str = "", causes: list[str] | None = None, body: str | None = None
) -> ApiException:
    exc = ApiException(status=status, reason="Status")
    exc.body = (
        body
        if body is not None
        else json.dumps(
            {
                "kind": "Status",
                "message": f"message {status}",
                "reason": reason,
                "details": {"causes": [{"reason": c} for c in causes or []]},
            }
        )
    )
    return exc


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_api_error(404, "NotFound"), NotFound),
        (_api_error(409, "AlreadyExists"), AlreadyExists),
        (_api_error(409, "Conflict"), Conflict),
        (_api_error(429, "TooManyRequests", ["DisruptionBudget"]), DisruptionBlocked),
        (_api_error(429, "TooManyRequests"), ClusterUnavailable),
        (_api_error(403, "Forbidden"), AccessDenied),
        (_api_error(422, "Invalid"), InvalidRequest),
        (_api_error(503, body="<html>bad gateway</html>"), ClusterUnavailable),
        (urllib3.exceptions.MaxRetryError(None, "/api", "refused"), ClusterUnavailable),  # type: ignore[arg-type]
        (RuntimeError("odd"), ClusterError),
    ],
)
def test_translation_of_vendor_errors(error: Exception, expected: type[ClusterError]) -> None:
    translated = translate(error, "do a thing")
    assert type(translated) is expected
    assert str(translated).startswith("do a thing:")


def test_translated_conflict_says_what_to_do_next() -> None:
    assert "re-read it and decide again" in str(translate(_api_error(409, "Conflict"), "cordon n"))


def test_malformed_request_object_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="malformed"):
        node_request(["not", "a", "dict"])
    assert (
        node_request(
            {
                "kind": "GPUReset",
                "metadata": {"name": "r"},
                "spec": {"nodeName": "n", "gpu": 1},
                "status": {"phase": "Exploded"},
            }
        ).phase
        == "Unknown"
    )
