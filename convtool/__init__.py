"""convtool: depthwise-separable conversion of ONNX convolutions."""

__version__ = "0.1.0"
