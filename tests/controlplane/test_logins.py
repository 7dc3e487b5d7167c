"""The logins kubeconfigs use in practice work for the operator and kopf alike: an exec plugin
(as cloud CLIs log in) and a client certificate, each against the real server."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from support.cluster import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, Cluster
from support.operator import OPERATOR_USER, operator_requests

from controlplane.models import mlmodel

pytestmark = pytest.mark.cluster


def reaches_ready(cluster: Cluster, namespace: str) -> None:
    cluster.apply(mlmodel("sentiment", namespace))
    cluster.kubectl("wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=90s")


def test_an_exec_plugin_login(installed_cluster: Cluster, run_operator, namespace: str, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(installed_cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE))
    calls = tmp_path / "calls"
    plugin = tmp_path / "login-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "TOKEN"},
    }
    plugin.write_text(
        "#!/bin/sh\n"
        f"echo called >> {calls}\n"
        f"printf '%s' '{json.dumps(credential)}' | sed \"s/TOKEN/$(cat {token_file})/\"\n"
    )
    plugin.chmod(0o755)
    kubeconfig = installed_cluster.kubeconfig_with_user(
        tmp_path / "exec.kubeconfig",
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                  "interactiveMode": "Never"}},
    )
    operator = run_operator(namespaces=[namespace], kubeconfig=kubeconfig)
    reaches_ready(installed_cluster, namespace)
    assert calls.read_text().count("called") >= 2  # kopf's login and the operator's client
    assert {e["user"]["username"] for e in operator_requests(installed_cluster, operator.started)} == {OPERATOR_USER}


def test_a_client_certificate_login(installed_cluster: Cluster, run_operator, namespace: str, tmp_path: Path):
    user = "mlmodel-operator-cert"
    pki = installed_cluster.directory / "pki"
    key, csr, cert = tmp_path / "op.key", tmp_path / "op.csr", tmp_path / "op.crt"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={user}",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    (tmp_path / "ext").write_text("extendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
                    "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "1",
                    "-extfile", str(tmp_path / "ext"), "-out", str(cert)], check=True, capture_output=True)
    installed_cluster.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mlmodel-operator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })
    kubeconfig = installed_cluster.kubeconfig_with_user(
        tmp_path / "cert.kubeconfig",
        {"client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
         "client-key-data": base64.b64encode(key.read_bytes()).decode()},
    )
    operator = run_operator(namespaces=[namespace], kubeconfig=kubeconfig, user=user)
    reaches_ready(installed_cluster, namespace)
    assert {e["user"]["username"] for e in operator_requests(installed_cluster, operator.started, user)} == {user}
