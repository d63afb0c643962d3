"""Blueprints, one per resource: profiles, events (the collector), health (+ OpenAPI)."""
