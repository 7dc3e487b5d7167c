"""The pure comparisons behind "write only when something differs"."""

from __future__ import annotations

import pytest

from mlmodel_operator.diffing import controller_uid, covers, merge_patch, owned_fields


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
