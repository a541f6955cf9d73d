"""``convtool report`` (placeholder until the report command lands)."""
