"""Shared parts for the agent's tests: a small fleet, a runbook catalogue mirror, a store-backed action port,
and a local server speaking the Chat Completions protocol."""
