"""How the model is reached from outside the cluster: an Ingress, or a Gateway API HTTPRoute.

Both send HTTP to the Service's port named http; gRPC stays in-cluster. The runtime serves at
the root (/v2/models/NAME...): an HTTPRoute rewrites its path prefix to / itself, an Ingress has
no portable rewrite, so a prefix there is left to the controller's annotations.
"""

from __future__ import annotations

from mlmodel_spec.resource import CANARY_SUFFIX, MLModelSpec

from mlmodel_operator.builders.common import name_of, object_meta

HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"


def build_ingress(mlmodel: dict, spec: MLModelSpec) -> dict | None:
    ingress = spec.ingress
    if ingress is None:
        return None
    meta = object_meta(mlmodel, spec)
    meta["annotations"] = {**ingress.annotations, **meta["annotations"]}
    body: dict = {
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": ingress.path,
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": name_of(mlmodel), "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ]
    }
    if ingress.class_name:
        body["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        body["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {key: body[key] for key in ("ingressClassName", "tls", "rules") if key in body},
    }


def build_httproute(mlmodel: dict, spec: MLModelSpec, *, canary_weight: int = 0) -> dict | None:
    """The route of spec.gateway; with `canary_weight` (percent), the canary's Service
    (NAME-canary) takes that share of its requests, the model's the rest."""
    gateway = spec.gateway
    if gateway is None:
        return None
    parents = []
    for ref in gateway.parent_refs:
        parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parents.append(parent)
    rule: dict = {
        "matches": [{"path": {"type": "PathPrefix", "value": gateway.path}}],
        "backendRefs": [
            {
                "group": "",
                "kind": "Service",
                "name": name_of(mlmodel),
                "port": spec.service.port,
                "weight": 100 - canary_weight if canary_weight else 1,
            }
        ],
    }
    if canary_weight:
        rule["backendRefs"].append(
            {
                "group": "",
                "kind": "Service",
                "name": f"{name_of(mlmodel)}{CANARY_SUFFIX}",
                "port": spec.service.port,
                "weight": canary_weight,
            }
        )
    if gateway.path.rstrip("/"):
        rule["filters"] = [
            {
                "type": "URLRewrite",
                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
            }
        ]
    route: dict = {"parentRefs": parents, "rules": [rule]}
    if gateway.hostnames:
        route["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": object_meta(mlmodel, spec),
        "spec": route,
    }


def external_url(mlmodel: dict, spec: MLModelSpec) -> str | None:
    """The model's V2 endpoint as seen from outside, or None when no route names a host.

    An Ingress with a TLS Secret is https; an HTTPRoute's scheme is its Gateway listener's,
    which the MLModel does not say: http is reported (a listener that redirects to https
    still answers there)."""
    if spec.ingress is not None:
        scheme = "https" if spec.ingress.tls_secret_name else "http"
        host, path = spec.ingress.host, spec.ingress.path
    elif spec.gateway is not None and spec.gateway.hostnames:
        scheme, host, path = "http", spec.gateway.hostnames[0], spec.gateway.path
    else:
        return None
    return f"{scheme}://{host}{path.rstrip('/')}/v2/models/{name_of(mlmodel)}"
