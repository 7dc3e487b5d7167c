"""The operator image, run as in its Deployment, reconciling an MLModel on the local control plane.

The container shares the host network to reach the API server on the host's loopback, with a
ServiceAccount token of the install's mlmodel-operator in a read-only kubeconfig: the only
difference from a pod, which gets the same token through its projected service-account volume.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from container_tools import (
    container_logs,
    container_state,
    docker,
    remove_container,
)
from controlplane.models import condition, mlmodel
from support.cluster import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, Cluster
from support.operator import denied, operator_requests, utc_now
from support.ports import free_port, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.cluster]

RUNTIME_IMAGE = "registry.example.com/mlmodel/runtime:container-test"


class OperatorContainer:
    def __init__(self, name: str, started: datetime.datetime) -> None:
        self.name, self.started = name, started

    def running(self) -> bool:
        state = container_state(self.name)
        if not state.get("Running"):
            raise AssertionError(f"operator container exited ({state.get('ExitCode')}):\n{container_logs(self.name)}")
        return True

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """wait_until, failing at once (with the container's logs) if the container stops."""
        try:
            return wait_until(lambda: self.running() and predicate(), timeout=timeout, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}; operator logs:\n{container_logs(self.name)}") from None


@pytest.fixture
def operator_container(
    operator_image: str, installed_cluster: Cluster, unique_name: str, tmp_path: Path
) -> Iterator[OperatorContainer]:
    token = installed_cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
    kubeconfig = installed_cluster.kubeconfig_for_token(tmp_path / "kubeconfig", token)
    kubeconfig.chmod(0o644)  # read by the image's non-root user
    container = OperatorContainer(f"{unique_name}-operator", utc_now() - datetime.timedelta(seconds=1))
    docker(
        "run", "-d", "--name", container.name, "--network", "host",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        # As the install's emptyDirs: /tmp, and the metadata store's SQLite file when no
        # database is named.
        "--tmpfs", "/tmp", "--tmpfs", "/var/cache/mlmodel",
        "-v", f"{kubeconfig}:/etc/mlmodel/kubeconfig:ro",
        "-e", "KUBECONFIG=/etc/mlmodel/kubeconfig",
        "-e", "MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=1",
        "-e", "MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS=0",
        "-e", f"MLMODEL_OPERATOR_METRICS_PORT={free_port()}",
        "-e", f"MLMODEL_OPERATOR_RUNTIME_IMAGE={RUNTIME_IMAGE}",
        operator_image,  # the image's own CMD: operator --all-namespaces --standalone
    )
    try:
        yield container
    finally:
        remove_container(container.name)


def test_operator_container_reconciles_an_mlmodel(
    installed_cluster: Cluster, namespace: str, operator_container: OperatorContainer
) -> None:
    cluster = installed_cluster
    operator_container.wait(
        lambda: {"mlmodels", "deployments"}
        <= {
            (e.get("objectRef") or {}).get("resource")
            for e in operator_requests(cluster, operator_container.started)
            if e["verb"] == "watch"
        },
        "the operator to watch mlmodels and deployments",
    )
    # Two replicas: a PodDisruptionBudget is made only when there is more than one.
    cluster.apply(mlmodel("sentiment", namespace, replicas=2))
    uid = cluster.get("mlmodel", "sentiment", namespace)["metadata"]["uid"]
    kinds = ("deployment", "service", "poddisruptionbudget")
    children = operator_container.wait(
        lambda: (found := [cluster.get(kind, "sentiment", namespace) for kind in kinds]) and all(found) and found,
        "the Deployment, Service and PodDisruptionBudget",
    )
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    pod = children[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == RUNTIME_IMAGE
    # KWOK runs the pods and marks them ready: the model is Ready in its stored status.
    stored = operator_container.wait(
        lambda: condition(cluster.get("mlmodel", "sentiment", namespace), "Ready").get("status") == "True"
        and cluster.get("mlmodel", "sentiment", namespace),
        "Ready=True in status",
    )
    assert stored["status"]["observedGeneration"] == stored["metadata"]["generation"]

    # The process really is the image's non-root user (on a read-only root filesystem).
    processes = docker("top", operator_container.name, "-o", "pid,uid,args").stdout.splitlines()[1:]
    assert processes and all(line.split()[1] == "10001" for line in processes), processes
    # docker top's `args` column is cut at ps's width: the whole command line is the host's /proc.
    commands = [
        Path(f"/proc/{line.split()[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        for line in processes
    ]
    assert any("mlmodel operator --all-namespaces" in command for command in commands), commands
    # Its ServiceAccount's RBAC (operator/deploy/rbac.yaml) allowed every request it made.
    assert denied(operator_requests(cluster, operator_container.started)) == []
