"""The ways gpuops runs: the `gpuops` CLI (`cli`, `commands`), the web app (dashboard, JSON API, Slack and
/metrics: `web`) and the workers (Celery tasks and the embedded daemon: `worker`). Each only calls the
pipeline and the core; nothing imports them."""
