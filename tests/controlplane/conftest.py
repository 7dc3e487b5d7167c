"""Each control-plane test gets a namespace of its own, held to the restricted Pod Security profile."""

from __future__ import annotations

import re
import uuid

import pytest

from support.cluster import Cluster


@pytest.fixture()
def namespace(installed_cluster: Cluster, request: pytest.FixtureRequest) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40]
    name = f"{stem.strip('-')}-{uuid.uuid4().hex[:5]}"
    installed_cluster.create_namespace(name)
    return name

