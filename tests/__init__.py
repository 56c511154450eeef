"""Tests, the fault suite and the benchmark."""
