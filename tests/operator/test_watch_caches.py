"""The operator's caches of watched objects: what counts as a change, and which copy is kept."""

from __future__ import annotations

from mlmodel_operator.children import Children
from mlmodel_operator.kube import change_marker
from mlmodel_operator.mlmodels import MLModels


def deployment(generation: int, version: str, **meta: object) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "generation": generation,
            "resourceVersion": version,
            "labels": {"app.kubernetes.io/managed-by": "mlmodel-operator"},
            **meta,
        },
        "spec": {"replicas": 1},
        "status": {"replicas": 1},
    }


def test_a_status_write_by_the_deployment_controller_is_not_a_change():
    applied = deployment(1, "100")
    after_controller = deployment(1, "107", annotations={"deployment.kubernetes.io/revision": "1"})
    after_controller["status"] = {"replicas": 1, "availableReplicas": 1}
    assert change_marker(applied) == change_marker(after_controller)


def test_spec_and_metadata_edits_by_others_are_changes():
    applied = deployment(1, "100")
    assert change_marker(deployment(2, "101")) != change_marker(applied)
    relabelled = deployment(1, "101")
    relabelled["metadata"]["labels"]["team"] = "fraud"
    assert change_marker(relabelled) != change_marker(applied)
    annotated = deployment(1, "101", annotations={"example.com/note": "edited"})
    assert change_marker(annotated) != change_marker(applied)


def test_kinds_without_a_status_writer_compare_resource_versions():
    service = {"kind": "Service", "metadata": {"resourceVersion": "5", "generation": 1}}
    assert change_marker(service) == "5"
    assert change_marker({**service, "metadata": {"resourceVersion": "6", "generation": 1}}) == "6"


def test_children_cache_skips_reapply_after_controller_status_writes():
    children = Children()
    desired = deployment(0, "")
    live = deployment(1, "100")
    children.observe("ADDED", live, keep_body=True)
    children.record_applied(desired, live)
    children.observe("MODIFIED", deployment(1, "108"), keep_body=True)
    assert children.unchanged_since_applied(desired)
    children.observe("MODIFIED", deployment(2, "109"), keep_body=True)
    assert not children.unchanged_since_applied(desired)


def mlmodel(version: str, ready: str, uid: str = "u1") -> dict:
    return {
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": version,
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"replicas": 1},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def test_mlmodels_cache_keeps_the_newest_copy_and_hands_out_private_ones():
    models = MLModels()
    models.observe("ADDED", mlmodel("10", "False"))
    models.observe("MODIFIED", mlmodel("12", "True"))  # our status write's answer
    models.observe("MODIFIED", mlmodel("11", "False"))  # the watch catching up
    kept = models.get("ns", "m")
    assert kept is not None and kept["metadata"]["resourceVersion"] == "12"
    assert "managedFields" not in kept["metadata"]
    kept["status"]["conditions"][0]["status"] = "Changed"
    assert models.get("ns", "m")["status"]["conditions"][0]["status"] == "True"


def test_mlmodels_cache_forgets_deleted_and_takes_a_recreated_model():
    models = MLModels()
    models.observe("ADDED", mlmodel("50", "True"))
    models.observe("ADDED", mlmodel("20", "False", uid="u2"))  # same name, new object
    assert models.get("ns", "m")["metadata"]["uid"] == "u2"
    models.observe("DELETED", mlmodel("21", "False", uid="u2"))
    assert models.get("ns", "m") is None


def test_a_stale_copy_is_traded_for_the_newest_one_seen():
    models = MLModels()
    listed = mlmodel("10", "False")  # a resync pass's listing, or a handler's queued snapshot
    models.observe("MODIFIED", mlmodel("12", "True"))  # the operator's status write since
    newest = models.newest(listed)
    assert newest["metadata"]["resourceVersion"] == "12"
    assert newest["status"]["conditions"][0]["status"] == "True"
    newest["status"]["conditions"][0]["status"] = "Changed"  # a private copy
    assert models.get("ns", "m")["status"]["conditions"][0]["status"] == "True"
    # A copy as new or newer than the cache's, or another object of the name, is kept as it is.
    fresher = mlmodel("13", "True")
    assert models.newest(fresher) is fresher
    assert models.newest(mlmodel("12", "True"))["metadata"]["resourceVersion"] == "12"
    other = mlmodel("5", "False", uid="u2")
    assert models.newest(other) is other
