"""edged.scoring."""
