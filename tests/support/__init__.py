"""Shared helpers for the tests: scripted runners and backends, tiny and real models, live servers."""
