"""The operator image, run as in its Deployment, reconciling an MLModel held by the API emulator.

The emulator listens on the host's loopback; the container shares the host network to reach it
(the only difference from a pod, which reaches the API server through its service account).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from container_tools import (
    container_logs,
    container_state,
    docker,
    free_loopback_port,
    remove_container,
)
from operator_test_fixtures import condition, make_mlmodel

pytestmark = pytest.mark.docker

NS = "default"
RUNTIME_IMAGE = "registry.example.com/mlmodel/runtime:container-test"


@pytest.fixture
async def operator_container(
    operator_image: str, cluster, kubeconfig: Path, unique_name: str
) -> AsyncIterator[str]:
    container = f"{unique_name}-operator"
    kubeconfig.chmod(0o644)  # read by the image's non-root user
    await asyncio.to_thread(
        docker,
        "run", "-d", "--name", container, "--network", "host",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        # As the install's emptyDir: the metadata store's SQLite file when no database is named.
        "--tmpfs", "/var/cache/mlmodel",
        "-v", f"{kubeconfig}:/etc/mlmodel/kubeconfig:ro",
        "-e", "KUBECONFIG=/etc/mlmodel/kubeconfig",
        "-e", "MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=1",
        "-e", "MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS=0",
        "-e", f"MLMODEL_OPERATOR_METRICS_PORT={free_loopback_port()}",
        "-e", f"MLMODEL_OPERATOR_RUNTIME_IMAGE={RUNTIME_IMAGE}",
        operator_image,  # the image's own CMD: operator --all-namespaces --standalone
    )
    try:
        yield container
    finally:
        await asyncio.to_thread(remove_container, container)


async def test_operator_container_reconciles_an_mlmodel(cluster, operator_container: str) -> None:
    async def running() -> bool:
        state = await asyncio.to_thread(container_state, operator_container)
        if not state.get("Running"):
            logs = await asyncio.to_thread(container_logs, operator_container)
            raise AssertionError(f"operator container exited ({state.get('ExitCode')}):\n{logs}")
        return True

    async def wait(predicate, what: str, timeout: float = 60):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await running()
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.2)
        logs = await asyncio.to_thread(container_logs, operator_container)
        raise AssertionError(f"timed out waiting for {what}; operator logs:\n{logs}")

    await wait(
        lambda: {"mlmodels", "deployments"} <= {c.resource for c in cluster.operator_calls() if c.verb == "watch"},
        "the operator to watch mlmodels and deployments",
    )
    mlmodel = cluster.create(make_mlmodel())
    kinds = ("apps/v1/deployments", "v1/services", "policy/v1/poddisruptionbudgets")
    children = await wait(
        lambda: all(cluster.get(kind, NS, "sentiment") for kind in kinds)
        and [cluster.get(kind, NS, "sentiment") for kind in kinds],
        "the Deployment, Service and PodDisruptionBudget",
    )
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == mlmodel["metadata"]["uid"]
    pod = children[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == RUNTIME_IMAGE
    stored = await wait(
        lambda: condition(cluster.get("serving.mlmodel.io/v1alpha1/mlmodels", NS, "sentiment"), "Ready"),
        "the Ready condition in status",
    )
    # Nothing rolled out in the emulator: honestly not ready yet.
    assert stored["status"] == "False"

    # The process really is the image's non-root user, and the container wrote nothing.
    processes = docker("top", operator_container, "-o", "pid,uid,args").stdout.splitlines()[1:]
    assert processes and all(line.split()[1] == "10001" for line in processes), processes
    assert "mlmodel operator --all-namespaces" in " ".join(processes)
