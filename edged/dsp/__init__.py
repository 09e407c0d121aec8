"""edged.dsp."""
