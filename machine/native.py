"""The native helper (native/xenpv_native.c): atomics on guest-shared RAM
and the GIL-free vCPU mailbox loop.  Built by ``make``."""

from __future__ import annotations

from qemu_xenpv.errors import XenPVError


def lib():
    try:
        from . import _xenpv_native
    except ImportError as e:
        raise XenPVError(f"the native helper is not built ({e}): run 'make' in the source tree") \
            from None
    return _xenpv_native
