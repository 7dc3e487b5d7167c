"""Deployment metadata store: what is deployed where, since when, and what changed.

PostgreSQL (psycopg2) or an embedded SQLite file; the light modules here (events, database,
repository, migrations) import no web or Kubernetes framework, so both processes can use them.
"""
