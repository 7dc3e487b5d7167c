"""Keys dropped from the spec leave the children; quantities never look like drift."""

from __future__ import annotations

import asyncio
import json

from conftest import make_mlmodel, wait_for

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
LAST_APPLIED = "serving.mlmodel.io/last-applied"


def pod_spec(cluster) -> dict:
    return cluster.get(DEPLOYMENTS, NS, "sentiment")["spec"]["template"]["spec"]


async def test_dropped_map_keys_are_removed_and_others_kept(cluster, start_operator):
    await start_operator(resync=1)
    cluster.create(
        make_mlmodel(
            nodeSelector={"disk": "ssd", "zone": "eu-1a"},
            monitoring={"serviceMonitor": False, "labels": {"release": "prom"}},
        )
    )
    await wait_for(
        lambda: (
            (cluster.get(DEPLOYMENTS, NS, "sentiment") or {})
            .get("spec", {})
            .get("template", {})
            .get("spec", {})
            .get("nodeSelector")
            == {"disk": "ssd", "zone": "eu-1a"}
        ),
        what="the deployment with both nodeSelector keys",
    )
    deployment = cluster.get(DEPLOYMENTS, NS, "sentiment")
    recorded = json.loads(deployment["metadata"]["annotations"][LAST_APPLIED])
    assert recorded["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd", "zone": "eu-1a"}
    # Someone else's key in a map the operator writes to: never the operator's to remove.
    cluster.patch(
        DEPLOYMENTS,
        NS,
        "sentiment",
        {"spec": {"template": {"spec": {"nodeSelector": {"gpu": "none"}}}}},
    )

    cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"nodeSelector": {"zone": None}}})
    await wait_for(
        lambda: pod_spec(cluster)["nodeSelector"] == {"disk": "ssd", "gpu": "none"},
        what="zone removed, the hand-added key kept",
    )
    cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"nodeSelector": None}})
    await wait_for(
        lambda: pod_spec(cluster).get("nodeSelector") == {"gpu": "none"},
        what="every key the operator set removed",
    )
    # Converged: the next resyncs find nothing to write.
    await asyncio.sleep(1.5)
    since = len(cluster.calls)
    await asyncio.sleep(2.2)
    assert [c.path for c in cluster.writes(since)] == []


async def test_non_canonical_quantities_do_not_patch_on_every_resync(cluster, start_operator):
    await start_operator(resync=0.5)
    cluster.create(
        make_mlmodel(
            runtime={
                "resources": {
                    "requests": {"cpu": "0.5", "memory": "1024Mi"},
                    "limits": {"cpu": 2, "memory": "1.5Gi"},
                }
            }
        )
    )
    await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment")
    # Stored as the API server stores them (the emulator canonicalises like it).
    resources = pod_spec(cluster)["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "1536Mi"},
    }
    await asyncio.sleep(1.5)  # the first status writes settle
    since = len(cluster.calls)
    await asyncio.sleep(2.0)  # four resync periods
    assert sum(1 for c in cluster.operator_calls(since) if c.resource == "deployments") >= 3
    deployment_writes = [c for c in cluster.writes(since) if c.resource == "deployments"]
    assert deployment_writes == []
