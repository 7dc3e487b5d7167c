"""Why a model's pods are not ready, from a pod list and the runtime's answer (pure)."""

from __future__ import annotations

import datetime

import pytest
from mlmodel_operator.peering import paused_by
from mlmodel_operator.pods import (
    ProbeTarget,
    container_problem,
    probe_targets,
    readiness_problem,
    unsettled,
)


def pod(
    name="m-1",
    *,
    phase="Running",
    ip="10.0.0.7",
    ready=False,
    state=None,
    last=None,
    restarts=0,
    port=8080,
    conditions=None,
    deleting=False,
) -> dict:
    status = {
        "name": "runtime",
        "ready": ready,
        "restartCount": restarts,
        "state": state if state is not None else {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
    }
    if last is not None:
        status["lastState"] = last
    meta = {"name": name, "namespace": "default"}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "containers": [{"name": "runtime", "ports": [{"name": "http", "containerPort": port}]}]
        },
        "status": {
            "phase": phase,
            "podIP": ip,
            "containerStatuses": [status],
            "conditions": conditions or [],
        },
    }


@pytest.mark.parametrize(
    ("pods", "reason", "words"),
    [
        (
            [
                pod(
                    state={
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 5m0s restarting",
                        }
                    }
                )
            ],
            "CrashLoopBackOff",
            "back-off 5m0s",
        ),
        (
            [pod(state={"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}})],
            "ImagePullBackOff",
            "pull access denied",
        ),
        (
            [pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}})],
            "ImagePullBackOff",
            "Back-off pulling",
        ),
        (
            [
                pod(
                    state={
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "db" not found',
                        }
                    }
                )
            ],
            "CreateContainerConfigError",
            'secret "db" not found',
        ),
        # The crash loop an OOM kill causes is reported as the OOM kill: it says what to change.
        (
            [
                pod(
                    state={"waiting": {"reason": "CrashLoopBackOff"}},
                    last={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    restarts=4,
                )
            ],
            "OOMKilled",
            "limits.memory",
        ),
        (
            [
                pod(
                    phase="Pending",
                    state={},
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/3 nodes: insufficient memory",
                        }
                    ],
                )
            ],
            "Unschedulable",
            "insufficient memory",
        ),
    ],
)
def test_container_problem(pods, reason, words):
    found = container_problem(pods)
    assert found is not None and found[0] == reason and words in found[1]
    assert "pod m-1" in found[1]


def test_no_container_problem_while_starting_or_terminating():
    assert container_problem([]) is None
    assert container_problem([pod(state={"waiting": {"reason": "ContainerCreating"}})]) is None
    assert container_problem([pod()]) is None
    assert (
        container_problem([pod(deleting=True, state={"waiting": {"reason": "CrashLoopBackOff"}})])
        is None
    )


def test_probe_targets_are_running_unready_runtimes_on_their_http_port():
    pods = [
        pod("m-b", ip="10.0.0.2", port=9000),
        pod("m-a", ip="10.0.0.1"),
        pod("m-ready", ready=True),
        pod("m-pending", phase="Pending"),
        pod("m-noip", ip=None),
        pod("m-waiting", state={"waiting": {"reason": "ContainerCreating"}}),
        pod("m-going", deleting=True),
    ]
    assert probe_targets(pods) == [
        ProbeTarget("m-a", "10.0.0.1", 8080),
        ProbeTarget("m-b", "10.0.0.2", 9000),
    ]
    assert ProbeTarget("p", "fd00::1", 8080).url == "http://[fd00::1]:8080/v2/health/ready"


@pytest.mark.parametrize(
    ("code", "body", "expected"),
    [
        (
            503,
            {"ready": False, "reason": "ChecksumMismatch", "message": "sha256 differs"},
            ("ArtifactUnavailable", "ChecksumMismatch: sha256 differs (pod m-1)"),
        ),
        (503, {"ready": False, "reason": "Loading", "message": "fetching"}, None),
        (503, {"ready": False, "reason": "ShuttingDown", "message": "stopping"}, None),
        (200, {"ready": True}, None),
        (503, "not json we know", None),
        (502, {"detail": "bad gateway"}, None),
    ],
)
def test_readiness_problem(code, body, expected):
    assert readiness_problem(ProbeTarget("m-1", "10.0.0.1", 8080), code, body) == expected


def test_long_runtime_messages_are_cut():
    reason, message = readiness_problem(
        ProbeTarget("m-1", "10.0.0.1", 8080),
        503,
        {"ready": False, "reason": "X", "message": "y" * 10_000},
    )
    assert reason == "ArtifactUnavailable" and len(message) < 700


def test_unsettled():
    assert unsettled({"spec": {"replicas": 2}, "status": {"availableReplicas": 1}})
    settled = {"availableReplicas": 2, "updatedReplicas": 2, "replicas": 2}
    assert not unsettled({"spec": {"replicas": 2}, "status": settled})
    # A rollout under way: the old pods serve, the new revision's may be failing.
    assert unsettled({"spec": {"replicas": 2}, "status": {**settled, "replicas": 3, "updatedReplicas": 1}})
    assert unsettled({"spec": {"replicas": 2}, "status": {**settled, "updatedReplicas": 1}})
    assert not unsettled({"spec": {"replicas": 0}, "status": {}})
    assert not unsettled(None)


def test_a_deployment_its_controller_has_not_seen_yet_is_not_diagnosed():
    fresh = {"metadata": {"generation": 2}, "spec": {"replicas": 1}, "status": {"observedGeneration": 1}}
    assert not unsettled(fresh)
    assert not unsettled({"metadata": {"generation": 1}, "spec": {"replicas": 1}})
    seen = {**fresh, "status": {"observedGeneration": 2, "availableReplicas": 0}}
    assert unsettled(seen)


NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)


def peer(priority, seconds_ago=1, lifetime=60):
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("peers", "paused"),
    [
        ({}, False),
        ({"me": peer(10)}, False),
        ({"me": peer(10), "other": peer(5)}, False),
        ({"me": peer(10), "other": peer(20)}, True),
        ({"me": peer(10), "other": peer(10)}, True),  # same priority: kopf pauses both
        ({"me": peer(10), "other": peer(20, seconds_ago=120)}, False),  # a dead peer
        ({"me": peer(10), "other": {"lastseen": "garbage"}}, False),
    ],
)
def test_paused_by_peers_follows_kopfs_rule(peers, paused):
    assert paused_by(peers, "me", 10, NOW) is paused
