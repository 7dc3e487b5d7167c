"""The MLModel resource as both processes read it: its spec (``resource``) and what that spec
tells the runtime (``runtime_settings``). Pure pydantic: no Kubernetes client, no web framework."""
