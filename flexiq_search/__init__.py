"""FlexiQ: adaptive 4/8-bit mixed-precision quantization of vision models."""

__version__ = "0.1.0"
