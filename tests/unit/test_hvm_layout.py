"""The HVM builder <-> hvmloader ABI: layout.py against hvm_info.h, the
e820 map, the vCPU block and the boot info."""

import re
import struct
from pathlib import Path

import pytest

from qemu_xenpv.hvm import layout

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "firmware" / "hvmloader" / "hvm_info.h"


def header_defines():
    out = {}
    for m in re.finditer(r"^#define\s+(HVM_\w+)\s+(0x[0-9a-fA-F]+|\d+)u?\b", HEADER.read_text(), re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


@pytest.mark.parametrize("c_name,py_name", [
    ("HVM_LOADER_BASE", "LOADER_BASE"), ("HVM_LOADER_LIMIT", "LOADER_LIMIT"),
    ("HVM_BOOT_DATA", "BOOT_DATA"), ("HVM_CMDLINE", "CMDLINE"), ("HVM_CMDLINE_MAX", "CMDLINE_MAX"),
    ("HVM_VCPU_BLOCK", "VCPU_BLOCK"), ("HVM_VCPU_MAGIC", "VCPU_MAGIC"),
    ("HVM_MAX_VCPUS", "MAX_VCPUS"), ("HVM_BOOT_INFO", "BOOT_INFO"), ("HVM_BOOT_MAGIC", "BOOT_MAGIC"),
    ("HVM_BOOT_VERSION", "BOOT_VERSION"), ("HVM_RESERVED_START", "RESERVED_START"),
    ("HVM_RESERVED_END", "RESERVED_END"), ("HVM_ACPI_BASE", "ACPI_BASE"),
    ("HVM_ACPI_LIMIT", "ACPI_LIMIT"), ("HVM_BOOT_NONE", "BOOT_NONE"),
    ("HVM_BOOT_LINUX", "BOOT_LINUX"), ("HVM_BOOT_PVH", "BOOT_PVH"),
    ("HVM_BOOT_REALMODE", "BOOT_REALMODE"), ("HVM_BOOT_MULTIBOOT", "BOOT_MULTIBOOT"),
    ("HVM_BI_NR_VCPUS_OFF", "BI_NR_VCPUS_OFF"),
    ("HVM_BI_CHECKED_LEN", "BOOT_INFO_CHECKED"), ("HVM_STATUS_GUEST", "STATUS_GUEST"),
    ("HVM_CB_VECTOR_BASE", "CB_VECTOR_BASE"), ("HVM_CB_VECTORS", "CB_VECTORS"),
])
def test_header_and_python_agree(c_name, py_name):
    assert header_defines()[c_name] == getattr(layout, py_name)


def test_seed_constants():
    # seed 002: "vcpu" at 0x9F800 in E820-reserved memory, count at 0x9F804
    assert layout.VCPU_BLOCK == 0x9F800
    assert layout.vcpu_block(4) == b"upcv" + struct.pack("<I", 4)
    assert layout.ACPI_BASE == 0xEA000 and layout.ACPI_LIMIT == 0xF0000


def test_dsdt_reads_nr_vcpus_where_the_loader_writes_it():
    asl = (ROOT / "firmware" / "hvmloader" / "dsdt.asl").read_text()
    assert f"0x{layout.BOOT_INFO + layout.BI_NR_VCPUS_OFF:08X}" in asl


@pytest.mark.parametrize("mb", [16, 32, 256, 3072])
def test_e820(mb):
    mem = mb << 20
    e = layout.build_e820(mem)
    assert [x.addr for x in e] == sorted(x.addr for x in e)
    for a, b in zip(e, e[1:]):
        assert a.end <= b.addr, "overlapping e820 entries"
    ram = [x for x in e if x.type == layout.E820_RAM]
    assert sum(x.size for x in ram) == mem - 0x100000 + 0x9F800 - layout.PV_AREA_SIZE
    # the vCPU block and the ACPI tables live in reserved memory
    def typ(addr):
        return next(x.type for x in e if x.addr <= addr < x.end)
    assert typ(layout.VCPU_BLOCK) == layout.E820_RESERVED
    assert typ(layout.BOOT_INFO) == layout.E820_RESERVED
    assert typ(layout.ACPI_BASE) == layout.E820_RESERVED
    assert typ(0xFEE00000) == layout.E820_RESERVED
    assert typ(layout.BOOT_DATA) == layout.E820_RAM
    assert typ(layout.PV_INFO) == layout.E820_RESERVED
    assert typ(layout.pv_area(mem)) == layout.E820_RESERVED
    assert typ(mem - 1) == layout.E820_RESERVED


def test_pv_info_table():
    raw = layout.pv_info(64 << 20, 4, 0x40011)
    assert raw[:8] == b"XenPVHVM" and len(raw) == 36 and sum(raw) & 0xFF == 0
    sig, length, ver, csum, hc, mb, port, n, xv, feat = struct.unpack("<8sHBBIIIIII", raw)
    assert hc == (64 << 20) - layout.PV_AREA_SIZE and mb == hc + 2 * 4096
    assert (port, n, xv) == (layout.DOORBELL_PORT, 4, 0x40011)
    assert layout.PV_INFO + len(raw) <= layout.RESERVED_END


def test_hypercall_area_stubs():
    from qemu_xenpv.hvm.builder import hypercall_area_image
    img = hypercall_area_image()
    for nr in (0, 17, 34, 127):                     # mov $nr, %eax; jmp common (page 1)
        stub = img[nr * 32:nr * 32 + 10]
        assert stub[0] == 0xB8 and struct.unpack_from("<I", stub, 1)[0] == nr
        if stub[5] == 0xE9:                                     # jmp rel32
            assert nr * 32 + 10 + struct.unpack_from("<i", stub, 6)[0] == 4096
        else:                                                   # jmp rel8
            assert stub[5] == 0xEB and nr * 32 + 7 + struct.unpack_from("<b", stub, 6)[0] == 4096
    src = (ROOT / "firmware" / "hvmloader" / "hypercall_page.S").read_text()
    assert f"#define DOORBELL_PORT   {layout.DOORBELL_PORT:#x}" in src


def test_boot_info_checksum_and_fields():
    raw = layout.boot_info(layout.BOOT_PVH, 0x100000, layout.BOOT_DATA, 32 << 20)
    assert len(raw) == layout.BOOT_INFO_SIZE
    assert sum(raw[:layout.BOOT_INFO_CHECKED]) & 0xFF == 0
    bi = layout.unpack_boot_info(raw)
    assert bi["magic"] == layout.BOOT_MAGIC and bi["checksum_ok"]
    assert bi["boot_kind"] == layout.BOOT_PVH and bi["entry"] == 0x100000
    assert bi["acpi_base"] == layout.ACPI_BASE
    assert bi["acpi_size"] == layout.ACPI_LIMIT - layout.ACPI_BASE
    assert bi["nr_vcpus"] == 0 and bi["status"] == layout.STATUS_NONE
