"""The Prometheus Operator ServiceMonitor that scrapes the runtime's /metrics."""

from __future__ import annotations

from mlmodel_spec.resource import MLModelSpec

from mlmodel_operator.builders.common import object_meta, selector_labels
from mlmodel_operator.settings import OperatorSettings

SERVICEMONITOR_API_VERSION = "monitoring.coreos.com/v1"
SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"


def build_servicemonitor(
    mlmodel: dict, spec: MLModelSpec, settings: OperatorSettings
) -> dict | None:
    monitoring = spec.monitoring
    if not monitoring.service_monitor:
        return None
    return {
        "apiVersion": SERVICEMONITOR_API_VERSION,
        "kind": "ServiceMonitor",
        # Extra labels let a Prometheus that selects ServiceMonitors by label find this one.
        "metadata": object_meta(mlmodel, spec, extra_labels=monitoring.labels),
        "spec": {
            "selector": {"matchLabels": selector_labels(mlmodel)},
            "endpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "scheme": "http",
                    "interval": monitoring.interval or settings.servicemonitor_interval,
                }
            ],
        },
    }
