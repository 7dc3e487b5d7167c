"""The pure comparisons behind "write only when something differs"."""

from __future__ import annotations

import pytest
from mlmodel_operator.diffing import (
    LAST_APPLIED_ANNOTATION,
    apply_patch,
    controller_uid,
    covers,
    last_applied,
    merge_patch,
    owned_fields,
)


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        # Server defaults inside a list item do not count as a difference.
        ({"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/dev/x"}]},
         {"containers": [{"name": "a", "image": "x"}]}, True),
        ({"containers": [{"name": "a", "image": "y"}]}, {"containers": [{"name": "a", "image": "x"}]}, False),
        # A list of another length differs (an env var added or removed).
        ({"env": [{"name": "A"}, {"name": "B"}]}, {"env": [{"name": "A"}]}, False),
        ({"replicas": 2.0}, {"replicas": 2}, True),
        ({"enabled": 1}, {"enabled": True}, False),
        ({}, {"replicas": 2}, False),
        ({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}, {"spec": {"ports": [{"port": 80}]}}, True),
    ],
)
def test_covers(live, desired, expected):
    assert covers(live, desired) is expected


def test_owned_fields_leave_server_fields_alone():
    desired = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "m", "namespace": "ns", "labels": {"a": "b"}, "ownerReferences": [{"uid": "u"}]},
        "spec": {"ports": [{"port": 80}]},
    }
    assert owned_fields(desired) == {
        "metadata": {"labels": {"a": "b"}, "ownerReferences": [{"uid": "u"}]},
        "spec": {"ports": [{"port": 80}]},
    }


def test_merge_patch_is_minimal_and_removes_keys():
    old = {"url": "u", "conditions": [{"type": "Ready"}], "lastFailure": {"reason": "X"}, "monitoring": {"a": 1, "b": 2}}
    new = {"url": "u", "conditions": [{"type": "Ready", "status": "True"}], "monitoring": {"a": 1}}
    assert merge_patch(old, new) == {
        "conditions": [{"type": "Ready", "status": "True"}],
        "lastFailure": None,
        "monitoring": {"b": None},
    }
    assert merge_patch(new, new) == {}


def test_controller_uid():
    assert controller_uid({"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b", "controller": True}]}}) == "b"
    assert controller_uid({"metadata": {}}) is None


def _deployment(node_selector: dict | None, labels: dict | None = None) -> dict:
    pod: dict = {"containers": [{"name": "runtime", "image": "x"}]}
    if node_selector is not None:
        pod["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns", "labels": labels or {"a": "1"}},
        "spec": {"template": {"spec": pod}},
    }


def _live_after(desired: dict, patch: dict | None, live: dict | None = None) -> dict:
    from kmock._internal.dicts import merge_patch_dict

    base = live if live is not None else {"metadata": {"name": "m"}}
    return base if patch is None else dict(merge_patch_dict(base, patch))


def test_apply_patch_removes_keys_it_set_before_and_no_longer_wants():
    first = _deployment({"disk": "ssd", "zone": "a"}, labels={"a": "1", "b": "2"})
    live = _live_after(first, apply_patch(first, {"metadata": {"name": "m"}}))
    assert live["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd", "zone": "a"}
    assert LAST_APPLIED_ANNOTATION in live["metadata"]["annotations"]
    # Someone else adds a label of their own: not ours to remove.
    live["metadata"]["labels"]["team"] = "search"

    second = _deployment({"disk": "ssd"}, labels={"a": "1"})
    patch = apply_patch(second, live)
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd", "zone": None}
    assert patch["metadata"]["labels"] == {"a": "1", "b": None}
    live = _live_after(second, patch, live)
    assert live["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert live["metadata"]["labels"] == {"a": "1", "team": "search"}
    assert apply_patch(second, live) is None  # converged: nothing more to write

    third = _deployment(None)
    live = _live_after(third, apply_patch(third, live), live)
    assert "nodeSelector" not in live["spec"]["template"]["spec"]
    assert apply_patch(third, live) is None


def test_apply_patch_records_once_on_objects_made_before_the_annotation():
    desired = _deployment({"disk": "ssd"})
    live = {**desired, "metadata": {**desired["metadata"], "uid": "u"}}  # no annotation yet
    patch = apply_patch(desired, live)
    assert set(patch["metadata"]) == {"labels", "annotations"}
    live = _live_after(desired, patch, live)
    assert apply_patch(desired, live) is None
    # An unreadable annotation is treated as absent, not as a crash.
    live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] = "{not json"
    assert last_applied(live) == {}
