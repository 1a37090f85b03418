"""The toy zoo's fitness tasks."""
