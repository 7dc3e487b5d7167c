"""spec.cache on the real API server: stored with the CRD's defaults, bad values refused with the
CRD's messages, and the operator's Deployment taking the Redis URL from the Secret (valueFrom, never
the value) beside the TTL and entry limit, exactly as `mlmodel render` prints them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from mlmodel_operator.builders import build_children
from mlmodel_operator.settings import OperatorSettings
from support.cluster import Cluster, KubectlError
from support.ports import wait_until

from controlplane.models import mlmodel

pytestmark = pytest.mark.cluster

REDIS = {"secretRef": {"name": "mlmodel-redis", "key": "url"}}


def runtime_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry for entry in container["env"]}


def test_defaults_stored_and_bad_values_refused(installed_cluster: Cluster, namespace: str) -> None:
    cluster = installed_cluster
    cluster.apply(mlmodel("cached", namespace, cache={"redis": REDIS}))
    stored = cluster.get("mlmodel", "cached", namespace)
    assert stored is not None
    assert stored["spec"]["cache"] == {"redis": REDIS, "ttlSeconds": 3600, "maxEntryBytes": 1048576}

    for cache, message in (
        ({"ttlSeconds": 60}, "spec.cache.redis: Required value"),
        ({"redis": {}}, "spec.cache.redis.secretRef: Required value"),
        ({"redis": {"secretRef": {"name": "r"}}}, "spec.cache.redis.secretRef.key: Required value"),
        ({"redis": REDIS, "ttlSeconds": 0}, "spec.cache.ttlSeconds: Invalid value: 0"),
        ({"redis": REDIS, "maxEntryBytes": 2**30}, "spec.cache.maxEntryBytes: Invalid value"),
        ({"redis": REDIS, "ttl": 60}, 'unknown field "spec.cache.ttl"'),
    ):
        body = yaml.safe_dump(mlmodel("refused", namespace, cache=cache))
        with pytest.raises(KubectlError) as refused:
            cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=body)
        assert message in " ".join(refused.value.stderr.split()), refused.value.stderr


def test_the_deployment_takes_the_url_from_the_secret(
    installed_cluster: Cluster, run_operator: Any, namespace: str
) -> None:
    cluster = installed_cluster
    run_operator(namespaces=[namespace])
    body = mlmodel("sentiment", namespace, cache={"redis": REDIS, "ttlSeconds": 120})
    cluster.apply(body)
    deployment = wait_until(
        lambda: cluster.get("deployment", "sentiment", namespace), what="the Deployment"
    )
    env = runtime_env(deployment)
    assert env["MLMODEL_CACHE_REDIS_URL"] == {
        "name": "MLMODEL_CACHE_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "mlmodel-redis", "key": "url"}},
    }
    assert env["MLMODEL_CACHE_TTL_SECONDS"]["value"] == "120"
    assert env["MLMODEL_CACHE_MAX_ENTRY_BYTES"]["value"] == "1048576"
    # What `mlmodel render` prints for the same file is what the operator applied.
    rendered = next(
        child for child in build_children(body, OperatorSettings(), servicemonitor_supported=False)
        if child["kind"] == "Deployment"
    )  # fmt: skip
    cache_env = {name: entry for name, entry in runtime_env(rendered).items() if "_CACHE_" in name}
    assert cache_env == {name: entry for name, entry in env.items() if "_CACHE_" in name}

    # Dropping spec.cache drops the variables (Server-Side Apply prunes what is no longer set).
    cluster.apply(mlmodel("sentiment", namespace))
    wait_until(
        lambda: "MLMODEL_CACHE_REDIS_URL"
        not in runtime_env(cluster.get("deployment", "sentiment", namespace) or deployment),
        what="the cache variables gone",
    )
