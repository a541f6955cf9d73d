"""``convtool convert`` (being written)."""
