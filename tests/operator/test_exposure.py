"""How a model is reached from outside: the Ingress and HTTPRoute builders, status.url and
status.exposure (pure; the real API server judges the objects in tests/controlplane)."""

from __future__ import annotations

import io

import pytest
import yaml
from mlmodel_operator.builders import build_children, build_httproute, build_ingress, external_url
from mlmodel_operator.render import main as render_main
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status
from mlmodel_spec.resource import HOSTNAME_PATTERN, PATH_PREFIX_PATTERN, InvalidSpec, parse_spec
from support.crd import SAMPLES, root_schema, walk, with_changes

SETTINGS = OperatorSettings()
NOW = "2026-01-01T00:00:00Z"


def kinds(mlmodel: dict, **supported: bool) -> list[str]:
    flags = {"servicemonitor_supported": False, **supported}
    return [child["kind"] for child in build_children(mlmodel, SETTINGS, **flags)]


def test_ingress_routes_its_host_and_prefix_to_the_service_port_named_http():
    mlmodel = SAMPLES["ingress"]
    ingress = build_ingress(mlmodel, parse_spec(mlmodel))
    assert ingress["spec"] == {
        "ingressClassName": "nginx",
        "tls": [{"hosts": ["models.example.com"], "secretName": "models-tls"}],
        "rules": [
            {
                "host": "models.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/sentiment",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "exposed", "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ],
    }
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert "serving.mlmodel.io/operator-version" in annotations
    assert ingress["metadata"]["ownerReferences"][0]["uid"] == "u-3"


def test_a_bare_ingress_names_no_class_and_no_tls():
    mlmodel = with_changes(SAMPLES["minimal"], {"spec.ingress": {"host": "m.example.com"}})
    spec = build_ingress(mlmodel, parse_spec(mlmodel))["spec"]
    assert set(spec) == {"rules"}
    assert spec["rules"][0]["http"]["paths"][0]["path"] == "/"


def test_httproute_attaches_to_its_gateways_and_rewrites_its_prefix_to_the_root():
    mlmodel = SAMPLES["gateway"]
    route = build_httproute(mlmodel, parse_spec(mlmodel))
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
         "namespace": "gateways", "sectionName": "https"},
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal"},
    ]
    assert route["spec"]["hostnames"] == ["models.example.com", "ml.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/routed/"}}]
    assert rule["filters"] == [
        {"type": "URLRewrite",
         "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
    ]
    # The Service's port number (the route names no port by name), spec.service.port.
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "routed", "port": 8000, "weight": 1}
    ]


def test_httproute_at_the_root_needs_no_rewrite_and_matches_any_host():
    mlmodel = with_changes(SAMPLES["minimal"], {"spec.gateway": {"parentRefs": [{"name": "g"}]}})
    route = build_httproute(mlmodel, parse_spec(mlmodel))
    assert "hostnames" not in route["spec"]
    assert "filters" not in route["spec"]["rules"][0]
    assert route["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/"


def test_the_route_is_a_child_only_when_asked_for_and_the_crd_is_there():
    assert kinds(SAMPLES["minimal"]) == ["Service", "Deployment"]
    assert kinds(SAMPLES["ingress"]) == ["Service", "Deployment", "Ingress"]
    assert kinds(SAMPLES["gateway"], httproute_supported=True) == ["Service", "Deployment", "HTTPRoute"]
    assert kinds(SAMPLES["gateway"], httproute_supported=False) == ["Service", "Deployment"]


def test_ingress_and_gateway_together_are_refused_by_the_spec_model():
    both = with_changes(
        SAMPLES["ingress"], {"spec.gateway": {"parentRefs": [{"name": "g"}]}}
    )
    with pytest.raises(InvalidSpec, match="set spec.ingress or spec.gateway, not both"):
        build_children(both, SETTINGS, servicemonitor_supported=False)


@pytest.mark.parametrize(
    "changes,url",
    [
        ({}, "http://sentiment.models.svc.cluster.local:80/v2/models/sentiment"),
        ({"spec.ingress": {"host": "m.example.com"}}, "http://m.example.com/v2/models/sentiment"),
        ({"spec.ingress": {"host": "m.example.com", "path": "/ml/", "tlsSecretName": "t"}},
         "https://m.example.com/ml/v2/models/sentiment"),
        ({"spec.gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["a.example.com", "b.example.com"],
                           "path": "/ml"}},
         "http://a.example.com/ml/v2/models/sentiment"),
        # No host name to give: the in-cluster URL.
        ({"spec.gateway": {"parentRefs": [{"name": "g"}]}},
         "http://sentiment.models.svc.cluster.local:80/v2/models/sentiment"),
    ],
)
def test_status_url_is_the_external_one_when_a_route_names_a_host(changes, url):
    mlmodel = with_changes(SAMPLES["minimal"], changes)
    status = compute_status(mlmodel, None, servicemonitor_supported=False, now=NOW)
    assert status["url"] == url
    if "spec.ingress" in changes or "hostnames" in str(changes):
        assert external_url(mlmodel, parse_spec(mlmodel)) == url


@pytest.mark.parametrize(
    "sample,supported,expected",
    [
        ("minimal", True, ("", "ClusterOnly")),
        ("ingress", False, ("Ingress", "Ingress")),
        ("gateway", True, ("HTTPRoute", "HTTPRoute")),
        ("gateway", False, ("", "CRDNotInstalled")),
    ],
)
def test_exposure_says_what_routes_the_model_and_why_not(sample, supported, expected):
    status = compute_status(
        SAMPLES[sample], None, servicemonitor_supported=False, httproute_supported=supported, now=NOW
    )
    exposure = status["exposure"]
    assert (exposure["kind"], exposure["reason"]) == expected
    if expected[1] == "CRDNotInstalled":
        assert "httproutes.gateway.networking.k8s.io" in exposure["message"]
        # Nothing outside reaches it: the URL stays the in-cluster one.
        assert status["url"] == "http://routed.models.svc.cluster.local:8000/v2/models/routed"


@pytest.mark.parametrize("flags,expected", [([], "HTTPRoute"), (["--no-httproute"], None)])
def test_render_shows_the_httproute_unless_told_the_gateway_api_is_missing(tmp_path, flags, expected):
    path = tmp_path / "mlmodel.yaml"
    path.write_text(yaml.safe_dump(SAMPLES["gateway"]))
    out = io.StringIO()
    assert render_main([str(path), "--no-servicemonitor", *flags], stdout=out) == 0
    rendered = [doc["kind"] for doc in yaml.safe_load_all(out.getvalue())]
    assert rendered == ["Service", "Deployment", *([expected] if expected else [])]


def test_the_crd_checks_hosts_and_paths_with_the_spec_models_patterns():
    schema = dict(walk(root_schema()))
    for field in (".spec.ingress.host", ".spec.gateway.hostnames[]"):
        assert schema[field]["pattern"] == HOSTNAME_PATTERN, field
    for field in (".spec.ingress.path", ".spec.gateway.path"):
        assert schema[field]["pattern"] == PATH_PREFIX_PATTERN, field
