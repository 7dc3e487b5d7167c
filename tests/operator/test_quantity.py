"""Quantities spelled as the API server stores them (apimachinery's canonical form)."""

from __future__ import annotations

import pytest
from mlmodel_operator.quantity import canonical_quantity, canonical_resources


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        # Examples from the Kubernetes documentation of Quantity and its serialisation.
        ("1.5", "1500m"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("0Gi", "0"),
        ("1024Mi", "1Gi"),
        ("4096Mi", "4Gi"),
        ("100Mi", "100Mi"),
        ("1.5Ki", "1536"),  # binary but not a whole number of Ki: no suffix
        ("0.1Ki", "102400m"),  # under 1024 bytes: decimal notation
        ("1000m", "1"),
        ("250m", "250m"),
        (".5", "500m"),
        ("1.0", "1"),
        ("1000", "1k"),
        ("2048", "2048"),
        ("1500k", "1500k"),
        ("1.5M", "1500k"),
        ("10Ei", "10Ei"),  # beyond 28 significant digits in nano-units: still exact
        ("0.5Ei", "512Pi"),
        ("0.001", "1m"),
        ("0.0000000001", "1n"),  # below a nano-unit: rounded up
        ("1e3", "1e3"),
        ("1E3", "1e3"),
        ("12e6", "12e6"),
        (2, "2"),
        (0, "0"),
    ],
)
def test_canonical_quantity(given, stored):
    assert canonical_quantity(given) == stored


def test_canonical_form_is_a_fixed_point():
    for text in ("1Gi", "500m", "1536Mi", "1k", "3", "1e3"):
        assert canonical_quantity(canonical_quantity(text)) == canonical_quantity(text)


def test_unparsable_text_is_left_for_the_api_server_to_refuse():
    assert canonical_quantity("lots") == "lots"


def test_canonical_resources_rewrites_requests_and_limits_only():
    assert canonical_resources(
        {
            "requests": {"cpu": "0.5", "memory": "1024Mi"},
            "limits": {"cpu": 2},
            "claims": [{"name": "gpu"}],
        }
    ) == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2"},
        "claims": [{"name": "gpu"}],
    }
