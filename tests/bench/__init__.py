"""The pipeline benchmark against real Redis and Postgres: `python -m tests.bench` (see __main__.py)."""
