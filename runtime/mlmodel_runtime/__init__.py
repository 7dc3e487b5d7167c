"""The mlmodel runtime: pulls a model artifact, verifies it and serves it over the Open Inference Protocol.

The operator never imports it (what both use is in common/: mlmodel_spec, mlmodel_store); importing
it must stay cheap all the same (`mlmodel serve --help`): no scikit-learn, no FastAPI here.
"""

__version__ = "0.1.0"
