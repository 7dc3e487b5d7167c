"""How the runtime is reached: its ClusterIP Service and, when asked for, a NetworkPolicy."""

from __future__ import annotations

from mlmodel_spec.resource import MLModelSpec

from mlmodel_operator.builders.common import object_meta, selector_labels


def build_service(mlmodel: dict, spec: MLModelSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(mlmodel, spec),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(mlmodel),
            "ports": [
                {
                    "name": "http",
                    "port": spec.service.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": spec.service.grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    # gRPC without TLS: HTTP/2 from the first byte, so proxies must not speak HTTP/1.
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def build_network_policy(mlmodel: dict, spec: MLModelSpec) -> dict | None:
    if not spec.network_policy.enabled:
        return None
    # An empty podSelector in `from` means every pod of the MLModel's own namespace.
    peers: list[dict] = [{"podSelector": {}}]
    allowed = sorted(set(spec.network_policy.allowed_namespaces))
    if allowed:
        peers.append(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": allowed,
                        }
                    ]
                }
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(mlmodel, spec),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(mlmodel)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": peers,
                    "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "grpc"}],
                }
            ],
        },
    }
