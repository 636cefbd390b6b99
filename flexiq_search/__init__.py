"""FlexiQ: adaptive 4/8-bit mixed-precision quantization of vision models.

The Python front door is `quantize` (docs/API.md); it is imported on first use, so importing the
package (and `flexiq --help`) does not load torch.
"""

__version__ = "0.1.0"

_API = ("quantize", "restore", "FlexiQModel", "Evaluation", "LevelAccuracy", "LatencyReport")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'flexiq_search' has no attribute {name!r}")
