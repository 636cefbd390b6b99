"""Ray placement of the library's search work: fitness actors, latency and finetuning tasks, the
job entry point for `ray job submit`. No search logic lives here (it is in flexiq_search)."""

from flexiq_search.allocator import keep_freed_memory

from .executor import RayExecutor, connect

keep_freed_memory()  # every Ray worker process that runs this package's code (see the allocator's docstring)

__all__ = ["RayExecutor", "connect"]
