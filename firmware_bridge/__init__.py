"""Wire protocols of the devices edged reads: pure codecs, reference firmware and emulators. No transport."""

from firmware_bridge.errors import DecodeError

__all__ = ["DecodeError"]
