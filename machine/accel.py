"""Choosing the accelerator.  ``auto`` picks KVM only when it is backed by
hardware virtualisation (vmx/svm in the host CPU flags and a vendor KVM
module loaded) and a paged guest passes a self-test: the shim alone boots
with paging on and halts.  Otherwise TCG.  The choice is remembered per
process and explained in one line."""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

_cache: Optional[Tuple[str, str]] = None


def kvm_hardware_backed() -> Tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm not accessible"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "")
    except OSError:
        flags = ""
    words = flags.split()
    if "vmx" not in words and "svm" not in words:
        return False, "/dev/kvm is not hardware-backed (no vmx/svm in the CPU flags)"
    if not (os.path.exists("/sys/module/kvm_intel") or os.path.exists("/sys/module/kvm_amd")):
        return False, "/dev/kvm is not hardware-backed (kvm_intel/kvm_amd not loaded)"
    return True, "hardware KVM"


def choose(requested: str, self_test: Callable[[], bool]) -> Tuple[str, str]:
    """Return (accel, reason) for 'auto', 'tcg' or 'kvm'."""
    global _cache
    if requested == "tcg":
        return "tcg", "requested"
    if requested == "kvm":
        ok, why = kvm_hardware_backed()
        return "kvm", "requested" if ok else f"requested ({why})"
    if _cache is not None:
        return _cache
    ok, why = kvm_hardware_backed()
    if not ok:
        _cache = ("tcg", f"auto: {why}")
    elif not self_test():
        _cache = ("tcg", "auto: KVM failed the paged self-test")
    else:
        _cache = ("kvm", "auto: hardware KVM passed the self-test")
    return _cache
