"""Booting the shim alone, straight to halt: the accelerator self-test
(`--accel auto` uses it before trusting KVM) and the floor `make bench`
compares a guest's boot against."""

from __future__ import annotations

import time

from . import paths
from .errors import MachineError
from .memmap import MachineMemory
from .shim import K, ShimImage, shim_boot


def boot_shim_alone(accel: str = "tcg", timeout: float = 10.0, pae: bool = True) -> float:
    """Seconds from QEMU launch until the shim reports it halted."""
    from qemu_xenpv.machine.qemu import QemuMachine
    from qemu_xenpv.machine.ram import GuestRAM
    shim = ShimImage()
    mem = MachineMemory(shim=shim, pae=pae, guest_pages=256, extra_pages=0, nr_vcpus=1)
    ram = GuestRAM(mem.ram_size, "qemu-xenpv-selftest")
    m = None
    try:
        mem.build(ram)
        boot = shim.phys("shim_boot")
        ram.write(boot, shim_boot.pack({
            "magic": K.BOOT_MAGIC, "abi_version": K.ABI_VERSION,
            "flags": (K.BOOT_PAE if pae else 0) | K.BOOT_HALT, "cr3": mem.shim_cr3,
            "nr_vcpus": 1, "doorbell": K.DOORBELL_IVSHMEM, "ivshmem_bar0": 0xFE000000,
            "ivshmem_bar1": 0xFE001000, "ivshmem_bar2": 0xFE100000, "spin_loops": 1000,
            "mem_top": ram.size, "vcpu": [mem.vcpus[0].priv],
            "pstack": [mem.vcpus[0].pstack + 8192], "panic": b""}))
        status = boot + shim_boot.offsets["status"]
        m = QemuMachine(ram, str(paths.rom_bin()), "selftest", accel=accel)
        t0 = time.monotonic()
        m.launch()
        while time.monotonic() - t0 < timeout:
            st = ram.r32(status)
            if st == K.STATUS_HALTED:
                return time.monotonic() - t0
            if st == K.STATUS_PANIC:
                raise MachineError("shim self-test panicked")
            if not m.alive():
                raise m.failure()
            time.sleep(0.0005)
        raise MachineError(f"shim self-test timed out under {accel}")
    finally:
        if m is not None:
            m.cleanup()
        ram.close()


def shim_boot_self_test(accel: str, timeout: float = 5.0) -> bool:
    try:
        boot_shim_alone(accel, timeout)
        return True
    except MachineError:
        return False
