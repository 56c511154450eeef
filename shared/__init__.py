"""Code both sides of the pipeline use: wire format, key names, settings, schema."""
