"""Incidents: correlation of findings, lifecycle, and the read side used by the CLI and the web app."""
