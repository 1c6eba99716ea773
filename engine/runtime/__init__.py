"""Plumbing every engine process shares: Prometheus metrics, structured JSON logs,
garbage-collector tuning."""
