"""Fault-injection helpers for tests that put the pipeline between misbehaving servers."""
