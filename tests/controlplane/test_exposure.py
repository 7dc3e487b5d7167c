"""How a model is reached from outside, on the real API server: spec.ingress makes an Ingress,
spec.gateway an HTTPRoute once the Gateway API's published CRD is applied; both follow the spec,
are removed when it drops them, and status.url and status.exposure say where and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.cluster import REPO_ROOT, Cluster, httproute_crd_installed
from support.ports import wait_until

from controlplane.models import controller_uid, mlmodel

pytestmark = pytest.mark.cluster
IN_CLUSTER = "http://sentiment.{namespace}.svc.cluster.local:80/v2/models/sentiment"


def patch(cluster: Cluster, namespace: str, spec: dict) -> None:
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def status_of(cluster: Cluster, namespace: str) -> dict:
    return (cluster.get("mlmodel", "sentiment", namespace) or {}).get("status") or {}


def wait_for_url(cluster: Cluster, namespace: str, url: str) -> dict:
    return wait_until(
        lambda: (status := status_of(cluster, namespace)).get("url") == url and status,
        timeout=60, what=f"status.url {url}",
    )


def test_ingress_is_made_updated_and_removed_with_the_spec(
    installed_cluster: Cluster, run_operator, namespace: str
):
    cluster = installed_cluster
    run_operator(namespaces=[namespace], resync="1")
    cluster.apply(
        mlmodel(
            "sentiment", namespace,
            ingress={"host": "models.example.com", "className": "nginx", "tlsSecretName": "models-tls"},
        )
    )
    ingress = wait_until(lambda: cluster.get("ingress", "sentiment", namespace), what="the Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["models.example.com"], "secretName": "models-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "models.example.com"
    assert rule["http"]["paths"] == [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "sentiment", "port": {"name": "http"}}}}
    ]
    owner = cluster.get("mlmodel", "sentiment", namespace)
    assert controller_uid(ingress) == owner["metadata"]["uid"]
    status = wait_for_url(cluster, namespace, "https://models.example.com/v2/models/sentiment")
    assert status["exposure"]["kind"] == "Ingress"
    cluster.kubectl("wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=90s")

    # A new path and no TLS: the same Ingress, changed (the tls list is pruned: the operator
    # applies only what it owns).
    patch(cluster, namespace, {"ingress": {"path": "/ml/sentiment", "tlsSecretName": None}})
    changed = wait_until(
        lambda: (i := cluster.get("ingress", "sentiment", namespace))
        and i["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/ml/sentiment" and i,
        what="the Ingress's new path",
    )
    assert "tls" not in changed["spec"]
    assert changed["metadata"]["uid"] == ingress["metadata"]["uid"]
    wait_for_url(cluster, namespace, "http://models.example.com/ml/sentiment/v2/models/sentiment")

    # Deleted by hand: put back.
    cluster.kubectl("delete", "ingress", "sentiment", "-n", namespace)
    wait_until(lambda: cluster.get("ingress", "sentiment", namespace), what="the Ingress put back")

    patch(cluster, namespace, {"ingress": None})
    wait_until(lambda: cluster.get("ingress", "sentiment", namespace) is None, what="the Ingress removed")
    status = wait_for_url(cluster, namespace, IN_CLUSTER.format(namespace=namespace))
    assert status["exposure"] == {
        "kind": "", "reason": "ClusterOnly",
        "message": "no spec.ingress or spec.gateway: reached through its Service only",
    }


def test_httproute_follows_the_gateway_api_crd_and_the_spec(
    installed_cluster: Cluster, run_operator, namespace: str
):
    cluster = installed_cluster
    assert cluster.get("crd", "httproutes.gateway.networking.k8s.io") is None
    run_operator(namespaces=[namespace], resync="1")
    gateway = {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["models.example.com"],
        "path": "/ml/sentiment",
    }
    cluster.apply(mlmodel("sentiment", namespace, gateway=gateway))
    cluster.kubectl("wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=90s")
    status = wait_until(
        lambda: (s := status_of(cluster, namespace)).get("exposure", {}).get("reason") == "CRDNotInstalled" and s,
        what="status.exposure to say CRDNotInstalled",
    )
    assert "httproutes.gateway.networking.k8s.io" in status["exposure"]["message"]
    assert status["url"] == IN_CLUSTER.format(namespace=namespace)

    with httproute_crd_installed(cluster):
        route = wait_until(
            lambda: cluster.get("httproute", "sentiment", namespace), timeout=60, what="the HTTPRoute"
        )
        assert route["spec"]["parentRefs"] == [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
             "namespace": "gateways", "sectionName": "https"}
        ]
        assert route["spec"]["hostnames"] == ["models.example.com"]
        [rule] = route["spec"]["rules"]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/ml/sentiment"}}]
        assert rule["filters"] == [
            {"type": "URLRewrite",
             "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
        ]
        assert rule["backendRefs"] == [
            {"group": "", "kind": "Service", "name": "sentiment", "port": 80, "weight": 1}
        ]
        assert controller_uid(route) == cluster.get("mlmodel", "sentiment", namespace)["metadata"]["uid"]
        status = wait_for_url(cluster, namespace, "http://models.example.com/ml/sentiment/v2/models/sentiment")
        assert status["exposure"]["kind"] == "HTTPRoute"

        # The spec drops the gateway for an Ingress: the route goes, the Ingress comes.
        patch(cluster, namespace, {"gateway": None, "ingress": {"host": "models.example.com"}})
        wait_until(
            lambda: cluster.get("httproute", "sentiment", namespace) is None
            and cluster.get("ingress", "sentiment", namespace),
            what="the HTTPRoute removed and the Ingress made",
        )
        wait_for_url(cluster, namespace, "http://models.example.com/v2/models/sentiment")
        patch(cluster, namespace, {"ingress": None, "gateway": {"parentRefs": [{"name": "public"}]}})
        wait_until(lambda: cluster.get("httproute", "sentiment", namespace), what="the HTTPRoute again")
        # No host name to show: the in-cluster URL.
        wait_for_url(cluster, namespace, IN_CLUSTER.format(namespace=namespace))
        patch(cluster, namespace, {"gateway": None})
        wait_until(
            lambda: cluster.get("httproute", "sentiment", namespace) is None, what="the HTTPRoute removed"
        )
        assert cluster.get("ingress", "sentiment", namespace) is None


def test_both_routes_at_once_are_refused_by_the_api_server(installed_cluster: Cluster, namespace: str):
    both = mlmodel(
        "sentiment", namespace, ingress={"host": "m.example.com"}, gateway={"parentRefs": [{"name": "g"}]}
    )
    result = installed_cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(both), check=False
    )
    assert result.returncode != 0
    assert "set spec.ingress or spec.gateway, not both" in " ".join(result.stderr.split())
    assert installed_cluster.get("mlmodel", "sentiment", namespace) is None


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "examples" / "exposure").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_exposure_examples_render_objects_the_server_accepts(
    installed_cluster: Cluster, namespace: str, path: Path
):
    rendered = subprocess.run(
        [str(Path(sys.executable).with_name("mlmodel")), "render", str(path), "--namespace", namespace,
         "--no-servicemonitor"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert {"Ingress", "HTTPRoute"} & {o["kind"] for o in objects}
    with httproute_crd_installed(installed_cluster):
        out = installed_cluster.kubectl(
            "apply", "--server-side", "--field-manager=mlmodel-operator", "--dry-run=server",
            "-f", "-", input=rendered,
        ).stdout
    assert out.count("(server dry run)") == len(objects), out
    # The MLModel itself passes the CRD too.
    document = yaml.safe_load(path.read_text())
    document["metadata"]["namespace"] = namespace
    assert "(server dry run)" in installed_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(document)
    ).stdout
