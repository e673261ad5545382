"""Prefect 3 flows: thin wrappers around the functions in `tasks`."""
