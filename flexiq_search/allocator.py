"""Keep freed memory in the process instead of handing it back to the OS after every tensor.

glibc serves allocations above its mmap threshold (32 MiB at most by default) with fresh mmaps and
trims the heap top eagerly, so every large activation of an ImageNet-sized forward is page-faulted
in again: on a 2-core machine an EfficientNet-Lite0 forward spent more time in the kernel (page
faults) than computing. Raising the mmap and trim thresholds lets freed blocks be reused; measured
side by side, 128 images at 224x224 in batches of 32 went from 12.2 s (7.4 s system time) to 3.2 s.
The cost: the process keeps its peak heap instead of shrinking after a large step.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (a no-op elsewhere); True if the settings took."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return False
    limit = 2**31 - 1  # mallopt takes an int
    _done = all(mallopt(option, value) == 1 for option, value in
                ((M_MMAP_THRESHOLD, limit), (M_TRIM_THRESHOLD, limit), (M_TOP_PAD, 1 << 28)))
    return _done
