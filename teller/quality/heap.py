"""The C heap as glibc sees it, so a soak can tell fragmentation from a leak.

RSS alone cannot: memory freed into a fragmented heap stays resident, and a growing
RSS with flat bytes in use is the allocator, not the program. glibc's mallinfo2
(2.33 and later) reports both; elsewhere (musl, macOS) there is nothing to report.
It walks the free lists, so it is read when /metrics is scraped, never per packet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


@dataclass(frozen=True)
class HeapFigures:
    heap_bytes: int  # taken from the system with brk/sbrk and in thread arenas
    mmap_bytes: int  # large blocks mapped one by one (returned when freed)
    in_use_bytes: int  # allocated in the heap
    free_bytes: int  # free in the heap: reusable, but resident once touched


def _load() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []
    return function


_MALLINFO2 = _load()


def read_heap() -> HeapFigures | None:
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return HeapFigures(heap_bytes=info.arena, mmap_bytes=info.hblkhd, in_use_bytes=info.uordblks, free_bytes=info.fordblks)
