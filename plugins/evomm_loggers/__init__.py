"""Loggers built on the lifecycle hooks (CSV)."""
