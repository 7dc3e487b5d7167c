"""Secrets never leak through the operator: referenced for the kubelet, never read by the operator
(the API server's audit log says so), nor found in its log, its events, status or children."""

from __future__ import annotations

import base64
import json

import pytest
from support.cluster import Cluster
from support.operator import OPERATOR_USER, operator_requests, utc_now
from support.ports import wait_until

from controlplane.models import SHA256, condition, mlmodel

pytestmark = pytest.mark.cluster

DB_PASSWORD = "Pg-pass-7c1e9b2d4f"
TOKEN = "bearer-token-5a8e3f0c6d"
S3_KEY = "s3-secret-key-9d2b7e4a1c"
REDIS_PASSWORD = "redis-pass-3b8d1f6e2a"
SECRET_VALUES = (DB_PASSWORD, TOKEN, S3_KEY, REDIS_PASSWORD)
CRASHING_IMAGE = "kwok.test/failing/crashloop:1"


def secret(name: str, namespace: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def leaks(text: str) -> list[str]:
    encoded = [base64.b64encode(v.encode()).decode() for v in SECRET_VALUES]
    return [v for v in (*SECRET_VALUES, *encoded) if v in text]


def test_secrets_are_referenced_never_read_or_shown(installed_cluster: Cluster, run_operator, namespace: str):
    cluster = installed_cluster
    cluster.apply(
        secret("mlmodel-db", namespace, {"url": f"postgresql://mlmodel:{DB_PASSWORD}@db:5432/mlmodel"}),
        secret("mlmodel-auth", namespace, {"tokens": TOKEN}),
        secret("mlmodel-redis", namespace, {"url": f"redis://:{REDIS_PASSWORD}@redis:6379/0"}),
        secret("s3-creds", namespace, {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": S3_KEY}),
    )
    operator = run_operator(namespaces=[namespace], resync=0.5)
    # Its pods crash over and over (a KWOK stage): the operator has things to say.
    cluster.apply(
        mlmodel(
            "sentiment",
            namespace,
            model={
                "uri": "s3://models/sentiment/model.joblib",
                "sha256": SHA256,
                "credentialsSecret": {"name": "s3-creds"},
                "s3EndpointUrl": "http://minio.minio:9000",
            },
            database={"secretRef": {"name": "mlmodel-db", "key": "url"}},
            auth={"secretRef": {"name": "mlmodel-auth", "key": "tokens"}},
            cache={"redis": {"secretRef": {"name": "mlmodel-redis", "key": "url"}}},
            runtime={"image": CRASHING_IMAGE},
        )
    )
    deployment = wait_until(lambda: cluster.get("deployment", "sentiment", namespace), what="deployment")
    # Referenced by name for the kubelet to resolve, never copied in.
    pod_spec = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
    assert env["MLMODEL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mlmodel-db", "key": "url"}
    assert env["MLMODEL_CACHE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mlmodel-redis", "key": "url"}
    assert pod_spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert any(v.get("secret", {}).get("secretName") == "mlmodel-auth" for v in pod_spec["volumes"])

    # Make the operator talk: crashing pods (Warning events, Degraded), then a recovery.
    wait_until(
        lambda: condition(cluster.get("mlmodel", "sentiment", namespace), "Degraded").get("status") == "True",
        timeout=60,
        what="Degraded",
    )
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"runtime": {"image": None}}}),
    )
    cluster.kubectl("wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=60s")
    recovered = utc_now()
    wait_until(
        lambda: sum(
            1
            for e in operator_requests(cluster, recovered)
            if e["verb"] == "list" and (e.get("objectRef") or {}).get("resource") == "mlmodels"
        )
        >= 2,
        what="a couple of resyncs after the recovery",
    )
    assert operator.stop() == 0

    # The API server saw no request of the operator's touching a Secret, in any namespace.
    secret_requests = [
        f"{e['verb']} {e['requestURI']}"
        for e in cluster.audit_events(OPERATOR_USER)
        if (e.get("objectRef") or {}).get("resource") == "secrets"
    ]
    assert secret_requests == [], "the operator asked for Secrets"
    # It made plenty of others (this is the right user name).
    assert len(operator_requests(cluster, operator.started)) > 10

    assert leaks(operator.log()) == []
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    about_the_model = [e for e in events if e["involvedObject"]["kind"] == "MLModel"]
    assert len(about_the_model) >= 3, [e["reason"] for e in about_the_model]
    assert leaks(json.dumps(events)) == []
    stored = cluster.get("mlmodel", "sentiment", namespace, managed_fields=True)
    assert leaks(json.dumps(stored)) == []
    # Nor in anything the operator made, or the controllers made from it (pods included).
    everything = cluster.kubectl(
        "get", "deployments,replicasets,pods,services,poddisruptionbudgets,networkpolicies",
        "-n", namespace, "-o", "json", "--show-managed-fields",
    ).stdout
    assert '"kind": "Deployment"' in everything
    assert leaks(everything) == []
