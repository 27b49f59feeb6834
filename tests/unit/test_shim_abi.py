"""The shim <-> Python ABI: the layouts qemu_xenpv/shim.py declares must be
the C structs of firmware/shim/shim_abi.h, as the compiler laid them out
(read from the DWARF of firmware/build/shim.elf)."""

from __future__ import annotations

import re

import pytest
from elftools.elf.elffile import ELFFile

from qemu_xenpv import abi, shim
from qemu_xenpv.shim import ShimImage, constants


def _member_offset(die) -> int:
    attr = die.attributes["DW_AT_data_member_location"]
    if isinstance(attr.value, int):
        return attr.value
    # DWARF 2/3 location expression: DW_OP_plus_uconst <n>
    ops = list(attr.value)
    assert ops[0] == 0x23, f"unexpected member location {ops}"
    n, shift = 0, 0
    for b in ops[1:]:
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return n


@pytest.fixture(scope="module")
def dwarf_structs(shim_elf):
    """{struct name: (byte_size, [(member, offset), ...])} from shim.elf."""
    out = {}
    with open(shim_elf, "rb") as f:
        elf = ELFFile(f)
        assert elf.has_dwarf_info(), "shim.elf has no DWARF: build the firmware with -g"
        for cu in elf.get_dwarf_info().iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_name" not in die.attributes:
                    continue
                if "DW_AT_byte_size" not in die.attributes:
                    continue            # a declaration
                name = die.attributes["DW_AT_name"].value.decode()
                members = [(m.attributes["DW_AT_name"].value.decode(), _member_offset(m))
                           for m in die.iter_children() if m.tag == "DW_TAG_member"]
                entry = (die.attributes["DW_AT_byte_size"].value, members)
                if name in out:
                    assert out[name] == entry, f"struct {name} differs between compilation units"
                out[name] = entry
    return out


LAYOUTS = {
    "xen_regs": shim.xen_regs,
    "shim_trap": shim.shim_trap,
    "shim_mbox": shim.shim_mbox,
    "shim_vcpu": shim.shim_vcpu,
    "shim_boot": shim.shim_boot,
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_matches_dwarf(dwarf_structs, name):
    assert name in dwarf_structs, f"struct {name} not found in the DWARF of shim.elf"
    size, members = dwarf_structs[name]
    layout = LAYOUTS[name]
    assert layout.size == size, f"{name}: Python {layout.size} bytes, C {size} bytes"
    assert layout.offsets == dict(members), f"{name}: member offsets differ"
    # same member order too (offsets strictly increasing in both)
    assert list(layout.offsets) == [m for m, _ in members]


def test_xen_regs_is_cpu_user_regs(dwarf_structs):
    """The frame at the top of the entry stack has Xen's cpu_user_regs layout."""
    size, members = dwarf_structs["xen_regs"]
    assert size == abi.cpu_user_regs.size == 68
    c_offsets = dict(members)
    for field, off in abi.cpu_user_regs.offsets.items():
        assert c_offsets[field] == off, field


def test_trap_array_and_boot_arrays(dwarf_structs):
    _, vcpu = dwarf_structs["shim_vcpu"]
    size, _ = dwarf_structs["shim_vcpu"]
    traps = dict(vcpu)["traps"]
    assert size - traps == 256 * shim.shim_trap.size
    _, boot = dwarf_structs["shim_boot"]
    b = dict(boot)
    assert b["pstack"] - b["vcpu"] == 4 * shim.MAX_VCPUS
    assert b["status"] - b["pstack"] == 4 * shim.MAX_VCPUS


def test_pcpu_and_fast_structs_present(dwarf_structs):
    assert dwarf_structs["shim_pcpu"] == (16, [("pstack_top", 0), ("vcpu", 4),
                                               ("shim_cr3", 8), ("_pad", 12)])
    assert dwarf_structs["shim_fast"] == (16, [("doorbell", 0), ("doorbell_value", 4),
                                               ("doorbell_port", 8), ("spin_loops", 12)])


# ---- constants -----------------------------------------------------------
def test_constants_parsed():
    k = constants()
    assert k["SHIM_ABI_VERSION"] == 1
    assert k["SHIM_BOOT_MAGIC"] == 0x4D494853
    assert k["SHIM_BOOT_MAGIC"].to_bytes(4, "little") == b"SHIM"
    assert k["SHIM_MAX_VCPUS"] == 32 == shim.MAX_VCPUS
    assert k["SHIM_PUB_BASE"] == 0xFF000000
    assert k["SHIM_ESTACK_STRIDE"] == 0x2000
    assert k["SHIM_VEC_HYPERCALL"] == 0x82 == abi.HYPERCALL_VECTOR
    assert k["SHIM_REQ_HYPERCALL"] == 2
    assert k["SHIM_ACT_CR3"] == 1 and k["SHIM_ACT_EVENTS"] == 1 << 10
    assert k["SHIM_STATUS_PANIC"] == 0xDEAD
    # expressions: (15 * 4096 - 1), (4096 - 68)
    assert k["SHIM_GDT_LIMIT"] == 15 * 4096 - 1
    assert k["SHIM_ESTACK_FRAME_OFF"] == 4096 - 68 == shim.REGS
    assert k["SHIM_GDT_FIRST_RESERVED"] == abi.FIRST_RESERVED_GDT_ENTRY
    assert k["SHIM_GDT_RESERVED_PAGE"] == abi.FIRST_RESERVED_GDT_PAGE


def test_constants_cover_every_integer_define():
    """Every `#define SHIM_X <integer expression>` of the header is parsed."""
    from qemu_xenpv import paths
    text = paths.shim_abi_header().read_text()
    names = re.findall(r"^#define[ \t]+(SHIM_\w+)[ \t]+\S", text, re.M)
    names = [n for n in names if n != "SHIM_ABI_H"]
    assert names
    k = constants()
    missing = [n for n in names if n not in k]
    assert missing == []


def test_K_accessor():
    assert shim.K.ACT_CR3 == constants()["SHIM_ACT_CR3"]
    assert shim.K.PUB_END == 0xFF500000
    with pytest.raises(AttributeError):
        shim.K.NO_SUCH_CONSTANT


def test_status_offset_constant_matches_layout():
    assert constants()["SHIM_BOOT_STATUS_OFF"] == shim.shim_boot.offsets["status"] == 308


def test_register_offsets_in_entry_stack_page():
    assert shim.R["eax"] == 4096 - 68 + 24
    assert shim.R["gs"] + 4 == 4096                 # the frame ends at the page end
    assert shim.shim_mbox.size <= shim.REGS         # mailbox below the frame


# ---- the image -----------------------------------------------------------
@pytest.fixture(scope="module")
def image(shim_elf):
    return ShimImage(shim_elf)


def test_image_symbols(image):
    for sym in ("shim_boot", "shim_pcpu", "shim_fast", "entry_stubs"):
        assert sym in image.symbols, sym
    k = constants()
    # shim_boot is private (identity mapped); the entry structures are public
    assert image.symbols["shim_boot"] == image.phys("shim_boot")
    for sym in ("shim_pcpu", "shim_fast", "entry_stubs"):
        assert k["SHIM_PUB_BASE"] <= image.symbols[sym] < k["SHIM_PUB_END"], sym
    assert image.symbols["entry_stubs"] == k["SHIM_PUB_BASE"]


def test_image_physical_addresses(image):
    ram_end = image.paddr_end
    seen = set()
    for sym in ("shim_boot", "shim_pcpu", "shim_fast", "entry_stubs"):
        pa = image.phys(sym)
        # below the VGA/ROM window and inside the loaded image
        assert 0x10000 <= pa < 0xA0000, (sym, hex(pa))
        assert pa < ram_end
        assert pa not in seen
        seen.add(pa)
    assert image.phys("entry_stubs") % 4096 == 0
    assert image.phys("shim_boot") % 4 == 0
    assert image.phys("shim_pcpu") % 4 == 0 and image.phys("shim_fast") % 4 == 0
    # phys() agrees with the segment table
    for sym in ("shim_pcpu", "entry_stubs"):
        va = image.symbols[sym]
        seg = [s for s in image.segments if s[0] <= va < s[0] + s[3]]
        assert len(seg) == 1
        assert image.phys(sym) == va - seg[0][0] + seg[0][1]
    with pytest.raises(KeyError):
        image.phys("no_such_symbol_in_the_shim")


def test_image_segments(image):
    assert image.segments, "no PT_LOAD segments"
    k = constants()
    pub = list(image.pub_segments())
    assert pub, "no segment in the hypervisor hole"
    for vaddr, paddr, memsz, writable in pub:
        assert vaddr >= k["SHIM_PUB_BASE"] and vaddr + memsz <= k["SHIM_PUB_END"]
        assert vaddr % 4096 == 0 and paddr % 4096 == 0
    # the entry code (first public segment) is not writable
    text = [p for p in pub if p[0] == k["SHIM_PUB_BASE"]]
    assert text and text[0][3] is False
    # physical ranges do not overlap
    ranges = sorted((p, p + m) for _, p, _, m, _ in image.segments)
    for (a0, a1), (b0, _) in zip(ranges, ranges[1:]):
        assert a1 <= b0
    assert image.paddr_end == max(e for _, e in ranges)
    assert image.segments[0][1] <= image.entry < image.paddr_end


def test_image_load(image, make_ram):
    ram = make_ram(2 << 20)
    ram.write(0, b"\xAA" * (1 << 20))
    image.load(ram)
    for vaddr, paddr, data, memsz, _ in image.segments:
        assert ram.read(paddr, len(data)) == data
        if memsz > len(data):
            assert ram.read(paddr + len(data), memsz - len(data)) == bytes(memsz - len(data))


def test_missing_image_is_a_user_error(tmp_path):
    from qemu_xenpv.errors import XenPVError
    with pytest.raises(XenPVError, match="not built"):
        ShimImage(tmp_path / "shim.elf")


def test_symbol_sizes_match_layouts(shim_elf):
    with open(shim_elf, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        sizes = {s.name: s["st_size"] for s in symtab.iter_symbols()}
    assert sizes["shim_boot"] == shim.shim_boot.size
    assert sizes["shim_fast"] == 16
    assert sizes["shim_pcpu"] == 16 * shim.MAX_VCPUS


def test_fast_path_constants_match_the_xen_abi():
    """The shim answers some cases alone (fastpath.c, entry.c): the Xen
    numbers it uses are the ones Python uses."""
    from qemu_xenpv import abi
    from qemu_xenpv.hypercall.traps import EFLAGS_ALL
    K = shim.K
    assert K.HYPERCALL_IRET == abi.HYPERCALL_NR["iret"]
    assert K.FLAT_RING1_CS == abi.FLAT_RING1_CS
    assert K.VI_CR2 == abi.VI_CR2
    assert K.EFLAGS_ALL == EFLAGS_ALL
    from qemu_xenpv.emulate import PVOps
    assert len(PVOps.READABLE_MSRS) <= K.MAX_FAST_MSRS


def test_guest_view_windows_fit_the_hole_layout():
    """Each vCPU's read-only shim_vcpu sits in the unused half of its entry
    stack stride, and the vcpu_info windows between the stacks and the
    doorbell."""
    K = shim.K
    assert K.GV_VCPU_OFF + 4096 <= K.ESTACK_STRIDE
    assert K.ESTACK_BASE + K.MAX_VCPUS * K.ESTACK_STRIDE <= K.VINFO_BASE
    assert K.VINFO_BASE + K.MAX_VCPUS * 4096 <= K.DOORBELL_VA
    assert shim.shim_vcpu.size <= 4096
