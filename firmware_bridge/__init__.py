"""Wire protocols of the devices edged reads: pure codecs, reference firmware and emulators. No transport."""
