"""Training-side code and the shipped ONNX models. Imports edged.dsp; the daemon never imports this package."""
