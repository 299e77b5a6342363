"""Predictive autoscaling of inference Deployments: per deployment, a causal demand forecast and a replica
plan one cold start ahead (`planner`), from what one scaling cycle observes (`observation`)."""
