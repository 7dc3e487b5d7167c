"""The mlmodel runtime: pulls a model artifact, verifies it and serves it over the Open Inference Protocol.

This package is also the base layer the operator builds on (settings, the MLModel manifest
reader, the metadata store), so importing it must stay cheap: no scikit-learn, no FastAPI here.
"""

__version__ = "0.1.0"
