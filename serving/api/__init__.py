"""Blueprints, one per resource: profiles, send_time, events (the collector), webhooks (the email platforms),
health (+ OpenAPI)."""
