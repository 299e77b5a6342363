"""The twin's Kubernetes side: an in-memory cluster state and a Kubernetes-API-compatible HTTP surface."""
