"""The guest-physical layout of an HVM domain and the two blocks the
builder hands to hvmloader.  The numbers mirror firmware/hvmloader/
hvm_info.h (tests/unit/test_hvm_layout.py checks that they agree).

Seed 002 (changeset 6979, xc_vmx_build.c) is the model: the vCPU block in
E820-reserved memory at 0x9F800, the BIOS area reserved, ACPI tables at
0xEA000 below the ROM BIOS at 0xF0000, RAM from 1 MiB up.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Tuple

MiB = 1 << 20

LOADER_BASE = 0x00010000            # hvmloader copies itself here
LOADER_LIMIT = 0x00080000           # ... and keeps its stack below this
BOOT_DATA = 0x00090000              # boot_params (Linux) / hvm_start_info (PVH) / multiboot_info
CMDLINE = 0x00091000
CMDLINE_MAX = 0x1000
PVH_MEMMAP = BOOT_DATA + 0x100      # hvm_memmap_table_entry[]

VCPU_BLOCK = 0x0009F800             # seed: E820-reserved, "vcpu" magic + count
VCPU_MAGIC = 0x76637075
MAX_VCPUS = 128                     # HVM_MAX_VCPUS

BOOT_INFO = 0x0009F900
BOOT_MAGIC = 0x48565058             # "XPVH"
BOOT_VERSION = 1
BOOT_INFO_SIZE = 56
BOOT_INFO_CHECKED = 40
BI_NR_VCPUS_OFF = 40

RESERVED_START, RESERVED_END = 0x0009F800, 0x000A0000
ACPI_BASE, ACPI_LIMIT = 0x000EA000, 0x000F0000
KERNEL_BASE = 0x00100000            # bzImage protected-mode code, PVH images

BOOT_NONE, BOOT_LINUX, BOOT_PVH, BOOT_REALMODE, BOOT_MULTIBOOT = 0, 1, 2, 3, 4
BOOT_KIND_NAMES = {BOOT_NONE: "none", BOOT_LINUX: "linux", BOOT_PVH: "pvh",
                   BOOT_REALMODE: "realmode", BOOT_MULTIBOOT: "multiboot"}
FLAG_QUIET = 1

STATUS_NONE, STATUS_STARTED, STATUS_ACPI_DONE, STATUS_GUEST, STATUS_FAILED = 0, 1, 2, 3, 0xDEAD

# The PV area at the top of RAM (E820-reserved): what PV drivers in an HVM
# guest use (qemu_xenpv/hvm/pv.py, firmware/hvmloader/hypercall_page.S).
PV_AREA_SIZE = 0xC000
PV_HYPERCALL_PAGE = 0               # page index in the area: the stubs
PV_COMMON_PAGE = 1                  # their common code
PV_MBOX_PAGE = 2                    # 2 pages: 128 mailboxes of 64 bytes
PV_SHARED_INFO_PAGE = 4             # shared_info until XENMEM_add_to_physmap moves it
PV_STORE_PAGE = 5                   # XenStore ring (HVM_PARAM_STORE_PFN)
PV_CONSOLE_PAGE = 6                 # PV console ring (HVM_PARAM_CONSOLE_PFN)
PV_SCRATCH_PAGE = 7                 # vcpu_info of vCPUs >= 32 (no events)
PV_GRANT_PAGE = 8                   # 4 pages: grant-table frame i lives at page 8 + i
PV_GRANT_FRAMES = 4                 # ... until XENMEM_add_to_physmap places it
MBOX_SIZE = 64
DOORBELL_PORT = 0x520               # isa-debugcon: the byte is the APIC id
# the callback device (ivshmem-doorbell): MSI-X entry i raises vector
# CB_VECTOR_BASE + i on APIC 0 (the loader programs the table)
CB_VECTOR_BASE = 0x20
CB_VECTORS = 224

# struct hvm_pv_info, "XenPVHVM": how a guest finds the hypercall area
PV_INFO = 0x0009FA00
PV_INFO_SIGNATURE = b"XenPVHVM"
PV_INFO_VERSION = 1
_PV_INFO = struct.Struct("<8sHBBIIIIII")

MIN_MEMORY_MB = 16
MAX_MEMORY_MB = 3072                # RAM must end below the PCI hole the DSDT declares

E820_RAM, E820_RESERVED, E820_ACPI, E820_NVS = 1, 2, 3, 4
E820_NAMES = {E820_RAM: "RAM", E820_RESERVED: "reserved", E820_ACPI: "ACPI", E820_NVS: "NVS"}

_BOOT_INFO = struct.Struct("<IHHB3xIIIIIII")
assert _BOOT_INFO.size == BOOT_INFO_CHECKED


@dataclass(frozen=True)
class E820Entry:
    addr: int
    size: int
    type: int

    @property
    def end(self) -> int:
        return self.addr + self.size

    def pack(self) -> bytes:
        return struct.pack("<QQI", self.addr, self.size, self.type)


def build_e820(mem_bytes: int) -> List[E820Entry]:
    """The e820 map of an HVM domain with `mem_bytes` of RAM, ordered.

    As the seed's builder: RAM below the vCPU block, the block's reserved
    page, the VGA hole, the BIOS area (the ACPI tables are in it), RAM from
    1 MiB to the end, the IO-APIC/LAPIC/ROM range at the top of 4 GiB."""
    return [
        E820Entry(0, RESERVED_START, E820_RAM),
        E820Entry(RESERVED_START, RESERVED_END - RESERVED_START, E820_RESERVED),
        E820Entry(0xA0000, 0x20000, E820_RESERVED),
        E820Entry(0xE0000, 0x20000, E820_RESERVED),
        E820Entry(KERNEL_BASE, mem_bytes - PV_AREA_SIZE - KERNEL_BASE, E820_RAM),
        E820Entry(mem_bytes - PV_AREA_SIZE, PV_AREA_SIZE, E820_RESERVED),
        E820Entry(0xFEC00000, 0x1400000, E820_RESERVED),
    ]


def vcpu_block(nr_vcpus: int, magic: int = VCPU_MAGIC) -> bytes:
    """What the seed's set_nr_vcpus() wrote: two 32-bit words."""
    return struct.pack("<II", magic & 0xFFFFFFFF, nr_vcpus & 0xFFFFFFFF)


def boot_info(kind: int, entry: int, boot_data: int, low_mem_end: int,
              acpi_base: int = ACPI_BASE, acpi_size: int = ACPI_LIMIT - ACPI_BASE,
              flags: int = 0) -> bytes:
    """struct hvm_boot_info, checksummed; the loader's part zeroed."""
    raw = bytearray(_BOOT_INFO.pack(BOOT_MAGIC, BOOT_VERSION, BOOT_INFO_SIZE, 0, kind, entry,
                                    boot_data, acpi_base, acpi_size, low_mem_end, flags))
    raw[8] = (-sum(raw)) & 0xFF
    return bytes(raw) + bytes(BOOT_INFO_SIZE - BOOT_INFO_CHECKED)


def unpack_boot_info(raw: bytes) -> dict:
    magic, ver, length, csum, kind, entry, data, abase, asize, low, flags = \
        _BOOT_INFO.unpack_from(raw)
    nr, status, rsdp, present = struct.unpack_from("<IIII", raw, BOOT_INFO_CHECKED)
    return {"magic": magic, "version": ver, "length": length, "checksum_ok": sum(raw[:40]) & 0xFF == 0,
            "boot_kind": kind, "entry": entry, "boot_data": data, "acpi_base": abase,
            "acpi_size": asize, "low_mem_end": low, "flags": flags, "nr_vcpus": nr,
            "status": status, "rsdp": rsdp, "cpus_present": present}


def overlaps(a: Tuple[int, int], b: Tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def pv_area(mem_bytes: int) -> int:
    return mem_bytes - PV_AREA_SIZE


def pv_info(mem_bytes: int, nr_vcpus: int, xen_version: int, features: int = 0) -> bytes:
    """struct hvm_pv_info {char signature[8]; u16 length; u8 version;
    u8 checksum; u32 hypercall_paddr; u32 mailbox_paddr; u32 doorbell_port;
    u32 nr_vcpus; u32 xen_version; u32 features;} (36 bytes, all bytes sum
    to 0)."""
    area = pv_area(mem_bytes)
    raw = bytearray(_PV_INFO.pack(PV_INFO_SIGNATURE, _PV_INFO.size, PV_INFO_VERSION, 0,
                                  area + PV_HYPERCALL_PAGE * 4096, area + PV_MBOX_PAGE * 4096,
                                  DOORBELL_PORT, nr_vcpus, xen_version, features))
    raw[11] = (-sum(raw)) & 0xFF
    return bytes(raw)
