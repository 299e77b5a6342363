"""The PATCH flavours the twin accepts: JSON merge, strategic merge, JSON patch."""

from __future__ import annotations

import pytest

from simulator.kube.errors import BadRequest, Invalid, UnsupportedMediaType
from simulator.kube.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, apply_patch

NODE = {
    "metadata": {"name": "n", "annotations": {"a": "1", "b": "2"}},
    "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}], "podCIDRs": ["10.0.0.0/24"]},
}


def test_merge_patch_merges_maps_and_deletes_nulls() -> None:
    out = apply_patch(
        NODE,
        {"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"unschedulable": True}},
        MERGE_PATCH,
    )
    assert out["metadata"]["annotations"] == {"b": "2", "c": "3"}
    assert out["spec"]["unschedulable"] is True
    assert out["spec"]["taints"] == NODE["spec"]["taints"]
    assert NODE["metadata"]["annotations"] == {"a": "1", "b": "2"}  # input untouched


def test_merge_patch_replaces_lists() -> None:
    out = apply_patch(NODE, {"spec": {"taints": [{"key": "y", "effect": "NoExecute"}]}}, MERGE_PATCH)
    assert out["spec"]["taints"] == [{"key": "y", "effect": "NoExecute"}]


def test_strategic_merge_merges_taints_by_key_and_deletes_with_directive() -> None:
    added = apply_patch(
        NODE,
        {"spec": {"taints": [{"key": "y", "effect": "NoExecute"}]}},
        STRATEGIC_MERGE_PATCH + "; charset=utf-8",
    )
    assert [t["key"] for t in added["spec"]["taints"]] == ["x", "y"]
    removed = apply_patch(
        added,
        {"spec": {"taints": [{"key": "x", "$patch": "delete"}], "$setElementOrder/taints": [{"key": "y"}]}},
        STRATEGIC_MERGE_PATCH,
    )
    assert [t["key"] for t in removed["spec"]["taints"]] == ["y"]
    replaced = apply_patch(added, {"spec": {"taints": [{"$patch": "replace"}]}}, STRATEGIC_MERGE_PATCH)
    assert replaced["spec"]["taints"] == []


def test_strategic_merge_list_element_without_key_is_invalid() -> None:
    with pytest.raises(Invalid):
        apply_patch(NODE, {"spec": {"taints": [{"effect": "NoSchedule"}]}}, STRATEGIC_MERGE_PATCH)


def test_json_patch_operations() -> None:
    out = apply_patch(
        NODE,
        [
            {"op": "add", "path": "/metadata/annotations/gpuops.io~1cordoned-by", "value": "gpuops"},
            {"op": "replace", "path": "/spec/taints/0/effect", "value": "NoExecute"},
            {"op": "add", "path": "/spec/taints/-", "value": {"key": "z", "effect": "NoSchedule"}},
            {"op": "remove", "path": "/metadata/annotations/a"},
            {"op": "test", "path": "/metadata/name", "value": "n"},
            {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels"},
        ],
        JSON_PATCH,
    )
    assert out["metadata"]["annotations"] == {"b": "2", "gpuops.io/cordoned-by": "gpuops"}
    assert [t["effect"] for t in out["spec"]["taints"]] == ["NoExecute", "NoSchedule"]
    assert out["metadata"]["labels"] == "n"


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/metadata/missing"}],
        [{"op": "test", "path": "/metadata/name", "value": "other"}],
        [{"op": "add", "path": "no-slash", "value": 1}],
    ],
)
def test_json_patch_failures_are_invalid(ops: list[dict[str, object]]) -> None:
    with pytest.raises(Invalid):
        apply_patch(NODE, ops, JSON_PATCH)


def test_malformed_bodies_and_unknown_types() -> None:
    with pytest.raises(BadRequest):
        apply_patch(NODE, {"op": "add"}, JSON_PATCH)
    with pytest.raises(BadRequest):
        apply_patch(NODE, [{"path": "/x"}], JSON_PATCH)
    with pytest.raises(BadRequest):
        apply_patch(NODE, ["not", "an", "object"], MERGE_PATCH)
    with pytest.raises(UnsupportedMediaType):
        apply_patch(NODE, {}, "application/apply-patch+yaml")
