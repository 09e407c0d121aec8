"""IBI (inter-beat interval) sleep stage models."""
