"""edged.sources."""
