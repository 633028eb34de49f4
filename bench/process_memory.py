"""Memory of this process, for the benchmarks that measure it in fresh child processes."""
from __future__ import annotations

import ctypes
import functools
import resource
from pathlib import Path


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` field (VmHWM, VmRSS, ...) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_resident_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the process image, unlike
    ru_maxrss, which a child started by fork and exec inherits from its (larger) parent."""
    try:
        return status_mib("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _mallinfo2():
    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


def heap_in_use_mib() -> float:
    """Bytes the C heap holds for live allocations (glibc mallinfo2: small blocks in use plus mmapped
    ones), in MiB. Unlike the resident size it drops as soon as memory is freed, so it follows
    what a process keeps, torch's tensors included; NaN where glibc has no mallinfo2."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return float("nan")
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20
