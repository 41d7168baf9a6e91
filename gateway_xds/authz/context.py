"""The per-route context Envoy sends with each wake check (translate/authz.py writes it, authz/server.py
reads it): the service to bring up, and its project."""

PROJECT = "project"
WAKE_SERVICE_ID = "wake_service_id"
