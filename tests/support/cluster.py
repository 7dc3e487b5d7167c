"""The local control plane for tests: tests/cluster/up.sh started once per session, and helpers.

The cluster is the real thing built from source (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK with one fake node). Tests talk to it with the matching kubectl, as a user
would, and read what the server stores and its audit log.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.ports import free_port_block, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = REPO_ROOT / "tests" / "cluster"
API_GROUP = "serving.mlmodel.io"
OPERATOR_NAMESPACE = "mlmodel-system"
OPERATOR_SERVICE_ACCOUNT = "mlmodel-operator"


class KubectlError(AssertionError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
        )
        self.stderr, self.stdout = result.stderr, result.stdout


@dataclasses.dataclass
class Cluster:
    """A running local cluster: its state directory, admin kubeconfig and kubectl."""

    directory: Path
    port: int

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def kubectl_path(self) -> Path:
        return self.directory / "bin" / "kubectl"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.directory / "logs" / "audit.log"

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.kubectl_path), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(list(args), result)
        return result

    def apply(self, *objects: dict[str, Any], server_side: bool = False) -> str:
        flags = ["--server-side", "--field-manager=tests"] if server_side else []
        documents = yaml.safe_dump_all(list(objects))
        return self.kubectl("apply", *flags, "-f", "-", input=documents).stdout

    def get(
        self, resource: str, name: str, namespace: str | None = None, *, managed_fields: bool = False
    ) -> dict[str, Any] | None:
        """The stored object (with metadata.managedFields if asked), or None when NotFound."""
        where = ["-n", namespace] if namespace else []
        if managed_fields:
            where.append("--show-managed-fields")
        result = self.kubectl("get", resource, name, *where, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise KubectlError(["get", resource, name], result)
        return json.loads(result.stdout)

    def list(
        self, resource: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        where = ["-n", namespace] if namespace else ["-A"]
        if selector:
            where += ["-l", selector]
        return json.loads(self.kubectl("get", resource, *where, "-o", "json").stdout)["items"]

    def create_namespace(self, name: str, *, restricted: bool = True) -> None:
        """A namespace, held to the restricted Pod Security Standard by default."""
        labels = (
            {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }
            if restricted
            else {}
        )
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        # Pods can be created once the service-account controller made the default account.
        wait_until(
            lambda: self.get("serviceaccount", "default", name), what=f"default SA in {name}"
        )

    def token(self, service_account: str, namespace: str, duration: str = "2h") -> str:
        """A token from the TokenRequest API, as `kubectl create token` gets it."""
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()

    def kubeconfig_for_token(self, path: Path, token: str, server: str | None = None) -> Path:
        return self._write_kubeconfig(path, {"token": token}, server)

    def kubeconfig_with_user(self, path: Path, user: dict[str, Any], server: str | None = None) -> Path:
        return self._write_kubeconfig(path, user, server)

    def _write_kubeconfig(self, path: Path, user: dict[str, Any], server: str | None) -> Path:
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": server or cluster["server"],
                        "certificate-authority-data": cluster["certificate-authority-data"],
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def ca_pem(self) -> bytes:
        admin = yaml.safe_load(self.kubeconfig.read_text())
        return base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events (of `user` only, if given), oldest first."""
        events = []
        for path in sorted(self.audit_log.parent.glob("audit*.log")):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if user is None or event.get("user", {}).get("username") == user:
                        events.append(event)
        return events


def start_cluster(directory: Path, port: int) -> Cluster:
    environment = {**os.environ, "MLMODEL_CLUSTER_PORT": str(port)}
    result = subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / "up.sh"), str(directory)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=3600,  # a cold build of the binaries on a fresh machine
        check=False,
    )
    cluster = Cluster(directory=directory, port=port)
    if result.returncode != 0:
        stop_cluster(cluster)  # what did start must not outlive the session
        raise RuntimeError(f"the local cluster did not start:\n{result.stderr}\n{result.stdout}")
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / "down.sh"), str(cluster.directory)],
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh local control plane for this test session, stopped at its end."""
    directory = tmp_path_factory.mktemp("cluster")
    cluster = start_cluster(directory, free_port_block(6))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def installed_cluster(kube_cluster: Cluster) -> Cluster:
    """The cluster with the operator's install applied (`kubectl apply -k operator/deploy`).

    The install's operator Deployment is scaled to zero: KWOK's pods run nothing, and the
    tests run the operator as a local process with the install's ServiceAccount instead.
    """
    kube_cluster.kubectl("apply", "-k", str(REPO_ROOT / "operator" / "deploy"))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/mlmodels.serving.mlmodel.io", "--timeout=60s"
    )
    kube_cluster.kubectl("scale", "deployment/mlmodel-operator", "-n", OPERATOR_NAMESPACE, "--replicas=0")
    return kube_cluster


@pytest.fixture()
def namespace(installed_cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own (named after it), held to the restricted Pod Security
    profile, in any test area that runs against the cluster."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40]
    name = f"{stem.strip('-')}-{uuid.uuid4().hex[:5]}"
    installed_cluster.create_namespace(name)
    return name


def pinned_module(module: str, version_variable: str) -> Path:
    """The directory of `module` at the version tests/cluster/versions.env pins, downloaded
    through the Go module proxy: where the tests take published CRDs from."""
    version = next(
        line.split("=", 1)[1].strip()
        for line in (CLUSTER_SCRIPTS / "versions.env").read_text().splitlines()
        if line.startswith(f"{version_variable}=")
    )
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True, text=True, check=True, timeout=600,
        cwd=CLUSTER_SCRIPTS / "modules" / "kwok", env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    return Path(json.loads(result.stdout)["Dir"])


def servicemonitor_crd() -> Path:
    """monitoring.coreos.com_servicemonitors.yaml from the pinned prometheus-operator module."""
    directory = pinned_module(
        "github.com/prometheus-operator/prometheus-operator", "PROMETHEUS_OPERATOR_VERSION"
    )
    return directory / "example" / "prometheus-operator-crd" / "monitoring.coreos.com_servicemonitors.yaml"


HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"


def gateway_api_crd(resource: str = "httproutes") -> Path:
    """The Gateway API's published standard-channel CRD of `resource` (httproutes, gateways,
    gatewayclasses...) from the pinned sigs.k8s.io/gateway-api module."""
    directory = pinned_module("sigs.k8s.io/gateway-api", "GATEWAY_API_VERSION")
    return directory / "config" / "crd" / "standard" / f"gateway.networking.k8s.io_{resource}.yaml"


def wait_established(cluster: Cluster, crd: str) -> None:
    """Until the CRD is served (`kubectl wait` fails on a CRD whose status has no conditions yet)."""
    wait_until(
        lambda: any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in ((cluster.get("crd", crd) or {}).get("status") or {}).get("conditions") or ()
        ),
        timeout=60, what=f"CRD {crd} established",
    )


@contextlib.contextmanager
def httproute_crd_installed(cluster: Cluster) -> Iterator[Cluster]:
    """The HTTPRoute CRD applied for the block, and deleted (with every HTTPRoute) after it."""
    cluster.kubectl("apply", "--server-side", "-f", str(gateway_api_crd()))
    try:
        wait_established(cluster, HTTPROUTE_CRD)
        yield cluster
    finally:
        cluster.kubectl("delete", "crd", HTTPROUTE_CRD, "--ignore-not-found", "--wait=true")
