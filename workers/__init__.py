"""Ray placement of the library's search work: fitness actors, latency and finetuning tasks, the
job entry point for `ray job submit`. No search logic lives here (it is in flexiq_search)."""

from .executor import RayExecutor, connect

__all__ = ["RayExecutor", "connect"]
