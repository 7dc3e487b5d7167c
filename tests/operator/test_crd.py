"""The MLModel CRD: structural, documented, and refusing bad MLModels with clear messages."""

from __future__ import annotations

import celpy
import kubernetes_validate
import pytest
import yaml
from mlmodel_spec import resource as spec_module
from mlmodel_spec.resource import InvalidSpec, parse_spec
from support.crd import (
    DIGEST,
    EXAMPLE_MLMODELS,
    K8S_VERSION,
    SAMPLES,
    crd,
    mlmodel,
    mlmodel_errors,
    root_schema,
    schema_errors,
    version,
    walk,
    with_changes,
)

STRUCTURAL_FORBIDDEN_IN_JUNCTORS = {"type", "description", "default", "additionalProperties", "nullable"}


def test_crd_passes_the_kubernetes_schema():
    assert kubernetes_validate.validate(crd(), K8S_VERSION, strict=True)


def test_crd_names():
    names = crd()["spec"]["names"]
    assert crd()["metadata"]["name"] == "mlmodels.serving.mlmodel.io"
    assert (names["kind"], names["plural"], names["shortNames"]) == ("MLModel", "mlmodels", ["mlm"])
    assert "all" not in names.get("categories", [])
    assert crd()["spec"]["scope"] == "Namespaced"


@pytest.mark.parametrize("path,node", list(walk(root_schema())), ids=lambda v: v if isinstance(v, str) else "")
def test_every_schema_node_is_structural_and_documented(path, node):
    if path == ".metadata":
        # The API server allows nothing but the type on the root's metadata.
        assert node == {"type": "object"}
        return
    assert node.get("description", "").strip(), f"{path or '<root>'} has no description"
    if node.get("x-kubernetes-int-or-string"):
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    else:
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
    assert not ("properties" in node and "additionalProperties" in node), path
    for junctor in ("anyOf", "allOf", "oneOf"):
        for branch in node.get(junctor, []):
            if not node.get("x-kubernetes-int-or-string"):
                assert not STRUCTURAL_FORBIDDEN_IN_JUNCTORS & set(branch), path
    for required in node.get("required", []):
        assert required in node.get("properties", {}), f"{path}: required {required} is not a property"
    if node.get("type") == "array":
        assert isinstance(node.get("items"), dict), f"{path}: an array needs items"
    for key in node.get("x-kubernetes-list-map-keys", []):
        assert key in node["items"].get("required", []), f"{path}: list-map key {key} must be required"
    if "default" in node:
        assert schema_errors({k: v for k, v in node.items() if k != "default"}, node["default"]) == []
    for rule in node.get("x-kubernetes-validations", []):
        environment = celpy.Environment()
        environment.compile(rule["rule"])  # raises on a CEL syntax error
        assert rule["message"].strip()


def _field(path: str) -> dict:
    node = root_schema()
    for part in path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_scale_subresource_points_at_real_fields():
    scale = version()["subresources"]["scale"]
    assert "status" in version()["subresources"]
    assert _field(scale["specReplicasPath"])["type"] == "integer"
    assert _field(scale["statusReplicasPath"])["type"] == "integer"
    assert _field(scale["labelSelectorPath"])["type"] == "string"


def test_printer_columns_point_at_real_fields():
    columns = {column["name"]: column for column in version()["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Reason", "Replicas", "Model", "URL", "Age"]
    for column in columns.values():
        assert column["description"]
        path = column["jsonPath"]
        if path.startswith(".metadata"):
            continue
        if path.startswith('.status.conditions[?(@.type=="Ready")].'):
            field = path.rsplit(".", 1)[1]
            node = _field(".status.conditions")["items"]["properties"][field]
        else:
            node = _field(path)
        assert node["type"] == "string", path


def test_uri_rule_is_the_one_the_operator_applies():
    rule = _field(".spec.model.uri")["x-kubernetes-validations"][0]["rule"]
    assert rule == f"self.matches('{spec_module.URI_PATTERN}')"
    assert _field(".spec.model.sha256")["pattern"] == spec_module.SHA256_PATTERN
    assert _field(".spec.monitoring.interval")["pattern"] == spec_module.DURATION_PATTERN
    for kind in ("requests", "limits"):
        quantity = _field(f".spec.runtime.resources.{kind}")["additionalProperties"]
        assert quantity["pattern"] == spec_module.QUANTITY_PATTERN


def test_crd_defaults_are_the_operators_defaults():
    """Every default the API server fills in equals the one the operator applies when it is absent
    (`mlmodel render` and `mlmodel serve` see MLModels the API server never defaulted)."""
    every_object = {
        "model": {"uri": "https://m.example.com/a.joblib", "sha256": DIGEST},
        "runtime": {},
        "autoscaling": {"maxReplicas": 4},
        "batching": {},
        "service": {},
        "monitoring": {},
        "predictionLogging": {},
        "networkPolicy": {},
        "cache": {"redis": {"secretRef": {"name": "redis", "key": "url"}}},
        "rollout": {},
    }
    parsed = parse_spec(mlmodel(spec=every_object)).model_dump(by_alias=True)
    # spec.ingress and spec.gateway exclude each other, as spec.shadow and spec.canary do: their
    # defaults are read one at a time.
    candidate = {"uri": "https://m.example.com/b.joblib", "sha256": DIGEST}
    for section, value in (
        ("ingress", {"host": "m.example.com"}),
        ("gateway", {"parentRefs": [{"name": "g"}]}),
        ("shadow", {"model": candidate}),
        ("canary", {"model": candidate, "weight": 10, "analysis": {}}),
    ):
        alone = parse_spec(mlmodel(spec={**every_object, section: value}))
        parsed[section] = alone.model_dump(by_alias=True)[section]
    defaults = [(path, node["default"]) for path, node in walk(root_schema()) if "default" in node]
    assert len(defaults) >= 10
    for path, default in defaults:
        value = parsed
        for part in path.removeprefix(".spec.").split("."):
            value = value[part]
        assert value == default, path


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_mlmodels_are_accepted(name):
    assert mlmodel_errors(SAMPLES[name]) == []


def test_examples_exist():
    assert len(EXAMPLE_MLMODELS) >= 2, "examples/*/mlmodel.yaml are part of the CRD contract"


@pytest.mark.parametrize("path", EXAMPLE_MLMODELS, ids=lambda p: p.parent.name)
def test_examples_are_accepted_by_the_crd(path):
    document = yaml.safe_load(path.read_text())
    assert mlmodel_errors(document) == []


@pytest.mark.parametrize("path", EXAMPLE_MLMODELS, ids=lambda p: p.parent.name)
def test_examples_relative_uri_is_refused_only_in_a_cluster(path):
    """The examples' `uri: model.joblib` is valid for the CRD and `mlmodel serve`; the operator
    refuses it with a message that says what to do."""
    document = yaml.safe_load(path.read_text())
    with pytest.raises(InvalidSpec, match="relative path"):
        parse_spec(document)
    parse_spec(with_changes(document, {"spec.model.uri": "https://models.example.com/m.joblib"}))


BASE = SAMPLES["minimal"]

INVALID = {
    "sha256-too-short": ({"spec.model.sha256": "abc123"}, "does not match"),
    "sha256-uppercase": ({"spec.model.sha256": DIGEST.upper()}, "does not match"),
    "sha256-missing": ({"spec.model.sha256": None}, "spec.model.sha256 is required"),
    "scheme-ftp": ({"spec.model.uri": "ftp://host/m.joblib"}, "other schemes are not supported"),
    "scheme-gs": ({"spec.model.uri": "gs://bucket/m.joblib"}, "other schemes are not supported"),
    "s3-without-key": ({"spec.model.uri": "s3://bucket"}, "other schemes are not supported"),
    "uri-with-space": ({"spec.model.uri": "https://host/a b.joblib"}, "other schemes are not supported"),
    "min-over-max": (
        {"spec.autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must not exceed maxReplicas",
    ),
    "replicas-and-autoscaling": (
        {"spec.replicas": 2, "spec.autoscaling": {"maxReplicas": 3}},
        "set spec.replicas or spec.autoscaling, not both",
    ),
    "negative-replicas": ({"spec.replicas": -1}, "less than the minimum"),
    "port-zero": ({"spec.service": {"port": 0}}, "less than the minimum"),
    "cpu-target-over-100": (
        {"spec.autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 150}},
        "greater than the maximum",
    ),
    "unknown-format": ({"spec.model.format": "pytorch"}, "is not one of"),
    "bad-interval": ({"spec.monitoring": {"interval": "30 seconds"}}, "does not match"),
    "interval-units-out-of-order": ({"spec.monitoring": {"interval": "1s1m"}}, "does not match"),
    "interval-unit-twice": ({"spec.monitoring": {"interval": "5s5s"}}, "does not match"),
    "sample-rate-over-1": ({"spec.predictionLogging": {"sampleRate": 2}}, "greater than the maximum"),
    "unknown-field": ({"spec.model.checksum": DIGEST}, "unknown field"),
    "no-model": ({"spec.model": None}, "'model' is a required property"),
    "uppercase-name": ({"metadata.name": "Sentiment"}, "must be a DNS-1035 label"),
    "name-too-long": ({"metadata.name": "m" * 64}, "must be a DNS-1035 label"),
    "name-with-dot": ({"metadata.name": "sentiment.v2"}, "must be a DNS-1035 label"),
    "ingress-and-gateway": (
        {"spec.ingress": {"host": "m.example.com"}, "spec.gateway": {"parentRefs": [{"name": "g"}]}},
        "set spec.ingress or spec.gateway, not both",
    ),
    "ingress-without-host": ({"spec.ingress": {"path": "/m"}}, "'host' is a required property"),
    "ingress-uppercase-host": ({"spec.ingress": {"host": "Models.example.com"}}, "does not match"),
    "ingress-wildcard-host": ({"spec.ingress": {"host": "*.example.com"}}, "does not match"),
    "ingress-label-too-long": ({"spec.ingress": {"host": "m" * 64 + ".example.com"}}, "does not match"),
    "ingress-relative-path": ({"spec.ingress": {"host": "m.example.com", "path": "m"}}, "does not match"),
    "ingress-dot-dot-path": (
        {"spec.ingress": {"host": "m.example.com", "path": "/a/../b"}}, "does not match"
    ),
    "ingress-double-slash": ({"spec.ingress": {"host": "m.example.com", "path": "//a"}}, "does not match"),
    "cache-without-redis": ({"spec.cache": {"ttlSeconds": 60}}, "'redis' is a required property"),
    "cache-redis-without-secret": ({"spec.cache": {"redis": {}}}, "'secretRef' is a required property"),
    "cache-ttl-zero": (
        {"spec.cache": {"redis": {"secretRef": {"name": "r", "key": "url"}}, "ttlSeconds": 0}},
        "less than the minimum",
    ),
    "cache-entry-over-redis-limit": (
        {"spec.cache": {"redis": {"secretRef": {"name": "r", "key": "url"}}, "maxEntryBytes": 2**30}},
        "greater than the maximum",
    ),
    "gateway-without-parents": ({"spec.gateway": {"parentRefs": []}}, "should be non-empty"),
    "gateway-hostname-with-port": (
        {"spec.gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["m.example.com:443"]}},
        "does not match",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_mlmodels_are_refused_with_a_clear_message(case):
    changes, expected = INVALID[case]
    bad = with_changes(BASE, changes)
    errors = mlmodel_errors(bad)
    assert errors, f"{case} was accepted"
    assert any(expected in error for error in errors), errors
    # What the schema refuses, the operator refuses too (`mlmodel render` skips the API server).
    with pytest.raises(InvalidSpec):
        parse_spec(bad)


def test_unverified_artifact_needs_the_explicit_opt_out():
    unverified = with_changes(BASE, {"spec.model.sha256": None, "spec.model.allowUnverified": True})
    assert mlmodel_errors(unverified) == []
    refused = with_changes(unverified, {"spec.model.allowUnverified": False})
    assert any("sha256 is required" in error for error in mlmodel_errors(refused))
