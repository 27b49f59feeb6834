"""ctypes binding of native/xenpv_native.c (atomics on guest-shared RAM and
the GIL-free mailbox wait).  Built by ``make``; ctypes releases the GIL
around every call, so a vCPU thread waiting here never stalls the others."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from qemu_xenpv.errors import XenPVError

_LIB_PATH = Path(__file__).resolve().parent / "native" / "build" / "libxenpv_native.so"
_lib = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        path = Path(os.environ.get("QEMU_XENPV_NATIVE", _LIB_PATH))
        if not path.exists():
            raise XenPVError(f"native helper {path} is not built: run 'make' in the source tree")
        l = ctypes.CDLL(str(path))
        u32p = ctypes.c_void_p
        l.xp_test_and_set_bit.argtypes = [u32p, ctypes.c_uint]
        l.xp_test_and_set_bit.restype = ctypes.c_int
        l.xp_test_and_clear_bit.argtypes = [u32p, ctypes.c_uint]
        l.xp_test_and_clear_bit.restype = ctypes.c_int
        l.xp_xchg32.argtypes = [u32p, ctypes.c_uint32]
        l.xp_xchg32.restype = ctypes.c_uint32
        l.xp_cmpxchg32.argtypes = [u32p, ctypes.c_uint32, ctypes.c_uint32]
        l.xp_cmpxchg32.restype = ctypes.c_uint32
        l.xp_xchg8.argtypes = [u32p, ctypes.c_uint8]
        l.xp_xchg8.restype = ctypes.c_uint8
        l.xp_mb.argtypes = []
        l.xp_mb.restype = None
        l.xp_wait_request.argtypes = [u32p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int, ctypes.c_int]
        l.xp_wait_request.restype = ctypes.c_uint32
        l.xp_complete.argtypes = [u32p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int]
        l.xp_complete.restype = ctypes.c_int
        _lib = l
    return _lib
