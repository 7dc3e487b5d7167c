"""A ServiceMonitor exists once the Prometheus Operator's real CRD does, and not before."""

from __future__ import annotations

import pytest
from support.cluster import Cluster, servicemonitor_crd
from support.ports import wait_until

from controlplane.models import condition, mlmodel

pytestmark = pytest.mark.cluster


def test_servicemonitor_follows_the_crd(installed_cluster: Cluster, run_operator, namespace: str):
    assert installed_cluster.get("crd", "servicemonitors.monitoring.coreos.com") is None
    run_operator(namespaces=[namespace], resync="1")
    installed_cluster.apply(
        mlmodel("sentiment", namespace, monitoring={"serviceMonitor": True, "interval": "15s"})
    )
    installed_cluster.kubectl(
        "wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=90s"
    )
    monitoring = installed_cluster.get("mlmodel", "sentiment", namespace)["status"]["monitoring"]
    assert monitoring["serviceMonitor"] is False and monitoring["reason"] == "CRDNotInstalled"
    assert installed_cluster.kubectl("api-resources", "--api-group=monitoring.coreos.com").stdout.count("\n") <= 1
    try:
        installed_cluster.kubectl("apply", "--server-side", "-f", str(servicemonitor_crd()))
        installed_cluster.kubectl(
            "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com",
            "--timeout=60s",
        )
        monitor = wait_until(
            lambda: installed_cluster.get("servicemonitor", "sentiment", namespace),
            timeout=60,
            what="the ServiceMonitor",
        )
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] == "http" and endpoint["interval"] == "15s"
        wait_until(
            lambda: installed_cluster.get("mlmodel", "sentiment", namespace)["status"]["monitoring"]["reason"] == "Enabled",
            what="status.monitoring to say Enabled",
        )
        assert condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Ready")["status"] == "True"
    finally:
        installed_cluster.kubectl(
            "delete", "crd", "servicemonitors.monitoring.coreos.com", "--ignore-not-found", "--wait=true"
        )
