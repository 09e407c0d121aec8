"""Wrist heart-rate sleep stager: pretrained on slpdb beats made watch-like, fine-tuned on Walch."""
