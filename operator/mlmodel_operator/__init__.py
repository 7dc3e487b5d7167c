"""The mlmodel operator: reconciles MLModel resources into Deployments, Services and friends."""

from mlmodel_operator import lean_client

__version__ = "0.1.0"

# Before anything imports kubernetes_asyncio (kopf does): its generated client, lazily.
lean_client.install()
