"""The causal five-stage EEG scorer trained on Sleep-EDF-20 per-epoch features."""
