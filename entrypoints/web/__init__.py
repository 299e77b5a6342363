"""The web app: dashboard pages, JSON API, /healthz and /metrics."""
