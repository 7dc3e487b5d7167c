"""Secrets never leak through the operator: not read, not logged, not in events, status or children."""

from __future__ import annotations

import asyncio
import base64
import json

from conftest import condition, make_mlmodel, wait_for

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
DB_PASSWORD = "Pg-pass-7c1e9b2d4f"
TOKEN = "bearer-token-5a8e3f0c6d"
S3_KEY = "s3-secret-key-9d2b7e4a1c"
SECRET_VALUES = (DB_PASSWORD, TOKEN, S3_KEY)


def secret(name: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def leaks(text: str) -> list[str]:
    encoded = [base64.b64encode(v.encode()).decode() for v in SECRET_VALUES]
    return [v for v in (*SECRET_VALUES, *encoded) if v in text]


async def test_secrets_are_referenced_never_read_or_shown(cluster, start_operator):
    cluster.create(
        secret("mlmodel-db", {"url": f"postgresql://mlmodel:{DB_PASSWORD}@db:5432/mlmodel"})
    )
    cluster.create(secret("mlmodel-auth", {"tokens": TOKEN}))
    cluster.create(
        secret("s3-creds", {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": S3_KEY})
    )
    operator = await start_operator(resync=0.5)
    cluster.create(
        make_mlmodel(
            model={
                "uri": "s3://models/sentiment/model.joblib",
                "sha256": "3f" * 32,
                "credentialsSecret": {"name": "s3-creds"},
                "s3EndpointUrl": "http://minio.minio:9000",
            },
            database={"secretRef": {"name": "mlmodel-db", "key": "url"}},
            auth={"secretRef": {"name": "mlmodel-auth", "key": "tokens"}},
        )
    )
    deployment = await wait_for(
        lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment"
    )
    # Referenced by name for the kubelet to resolve, never copied in.
    pod_spec = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
    assert env["MLMODEL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlmodel-db",
        "key": "url",
    }
    assert pod_spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert any(v.get("secret", {}).get("secretName") == "mlmodel-auth" for v in pod_spec["volumes"])

    # Make the operator talk: a stalled rollout (Warning events, Degraded), then a recovery.
    cluster.set_deployment_rollout(NS, "sentiment", ready=0, stalled=True)
    await wait_for(
        lambda: (
            condition(cluster.get(MLMODEL, NS, "sentiment"), "Degraded").get("status") == "True"
        ),
        what="Degraded",
    )
    cluster.set_deployment_rollout(NS, "sentiment")
    await wait_for(
        lambda: condition(cluster.get(MLMODEL, NS, "sentiment"), "Ready").get("status") == "True",
        what="Ready",
    )
    await asyncio.sleep(1.0)  # a couple of resyncs
    await operator.stop()

    calls = cluster.operator_calls()
    assert not [c.path for c in calls if c.resource == "secrets"], "the operator read a Secret"
    assert leaks(operator.log()) == []
    events = [
        *cluster.list_objects("v1/events")[0],
        *cluster.list_objects("events.k8s.io/v1/events")[0],
    ]
    assert len(events) >= 3
    assert leaks(json.dumps(events)) == []
    stored = cluster.get(MLMODEL, NS, "sentiment")
    assert leaks(json.dumps(stored)) == []
    for path in ("v1/services", DEPLOYMENTS, "policy/v1/poddisruptionbudgets"):
        assert leaks(json.dumps(cluster.list_objects(path)[0])) == []
    # Nor in anything the operator sent.
    assert leaks(json.dumps([c.body for c in calls if c.body is not None])) == []
