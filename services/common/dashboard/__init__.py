"""The web dashboard's page: static files, no build step (served by metrics_endpoint.py)."""
