"""The mlmodel operator: reconciles MLModel resources into Deployments, Services and friends."""

__version__ = "0.1.0"
