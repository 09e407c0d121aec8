"""edged.sinks."""
