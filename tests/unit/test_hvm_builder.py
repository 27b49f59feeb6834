"""The HVM image loaders and builder, on plain memory (no QEMU)."""

import struct
from pathlib import Path

import pytest

from qemu_xenpv.errors import ImageError
from qemu_xenpv.hvm import layout
from qemu_xenpv.hvm.builder import XEN_HVM_START_MAGIC, build_hvm
from qemu_xenpv.hvm.config import HVMConfig
from qemu_xenpv.hvm.image import load_hvm_image

ROOT = Path(__file__).resolve().parents[2]
SMP_ELF = ROOT / "guest-images" / "build" / "hvm-smp.elf"
PV_ELF = ROOT / "guest-images" / "build" / "demo.elf"


class FakeRAM:
    def __init__(self, mb):
        self.size = mb << 20
        self.mem = bytearray(self.size)

    def write(self, addr, data):
        assert 0 <= addr and addr + len(data) <= self.size
        self.mem[addr:addr + len(data)] = data

    def zero(self, addr, n):
        self.mem[addr:addr + n] = bytes(n)

    def read(self, addr, n):
        return bytes(self.mem[addr:addr + n])

    def r32(self, addr):
        return struct.unpack_from("<I", self.mem, addr)[0]


def bzimage(tmp_path, version=0x020F, pm=b"\x90" * 4096, init_size=0x200000, pref=0x1000000,
            reloc=1, setup_sects=4):
    img = bytearray((setup_sects + 1) * 512)
    img[0x1F1] = setup_sects
    img[0x201] = 0x6A                                   # header end 0x26C
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, version)
    img[0x211] = 1                                      # LOADED_HIGH
    struct.pack_into("<I", img, 0x214, 0x100000)
    struct.pack_into("<I", img, 0x22C, 0x37FFFFFF)
    struct.pack_into("<I", img, 0x230, 0x200000)
    img[0x234] = reloc
    struct.pack_into("<I", img, 0x238, 2047)
    struct.pack_into("<Q", img, 0x258, pref)
    struct.pack_into("<I", img, 0x260, init_size)
    p = tmp_path / "bzImage"
    p.write_bytes(bytes(img) + pm)
    return p


def config(kernel=None, vcpus=2, memory=64, **kw):
    cfg = HVMConfig(name="t", kernel=str(kernel or "k"), memory=memory, vcpus=vcpus,
                    guest_kernel=str(kernel) if kernel else None, **kw)
    if kernel:
        cfg.hvm_image = load_hvm_image(str(kernel), cfg.realmode_entry)
    return cfg


def test_vcpu_block_and_boot_info_for_no_kernel():
    ram = FakeRAM(32)
    b = build_hvm(config(vcpus=3), ram)
    assert ram.read(layout.VCPU_BLOCK, 8) == b"upcv" + struct.pack("<I", 3)
    bi = layout.unpack_boot_info(ram.read(layout.BOOT_INFO, layout.BOOT_INFO_SIZE))
    assert bi["checksum_ok"] and bi["boot_kind"] == layout.BOOT_NONE
    assert bi["low_mem_end"] == 32 << 20 and b.kind == layout.BOOT_NONE


def test_fault_injection_writes_what_it_is_told():
    ram = FakeRAM(32)
    build_hvm(config(vcpus=2, vcpu_magic=0xDEADBEEF, vcpu_count=200), ram)
    assert ram.read(layout.VCPU_BLOCK, 8) == struct.pack("<II", 0xDEADBEEF, 200)


def test_linux_boot_params(tmp_path):
    k = bzimage(tmp_path)
    cfg = config(k, memory=64)
    cfg.cmdline = "console=ttyS0 quiet"
    cfg.ramdisk_bytes = b"R" * 10000
    ram = FakeRAM(64)
    b = build_hvm(cfg, ram)
    assert b.kind == layout.BOOT_LINUX and b.entry == 0x100000 and b.boot_data == layout.BOOT_DATA
    bp = ram.read(layout.BOOT_DATA, 4096)
    assert bp[0x202:0x206] == b"HdrS" and bp[0x210] == 0xFF
    cmd_ptr, = struct.unpack_from("<I", bp, 0x228)
    assert ram.read(cmd_ptr, 20) == b"console=ttyS0 quiet\0"
    rd, rdsize = struct.unpack_from("<II", bp, 0x218)
    assert rdsize == 10000 and rd % 4096 == 0 and rd + rdsize <= 64 << 20
    assert ram.read(rd, 4) == b"RRRR"
    n = bp[0x1E8]
    e820 = [struct.unpack_from("<QQI", bp, 0x2D0 + 20 * i) for i in range(n)]
    assert e820 == [(e.addr, e.size, e.type) for e in layout.build_e820(64 << 20)]
    assert ram.read(0x100000, 4) == b"\x90" * 4


def test_linux_needs_room_to_decompress(tmp_path):
    k = bzimage(tmp_path, init_size=40 << 20)           # 16 MiB + 40 MiB
    with pytest.raises(ImageError, match="MiB of RAM"):
        build_hvm(config(k, memory=32), FakeRAM(32))


def test_old_boot_protocol_refused(tmp_path):
    with pytest.raises(ImageError, match="too old"):
        load_hvm_image(str(bzimage(tmp_path, version=0x0204)))


@pytest.mark.skipif(not SMP_ELF.exists(), reason="run 'make' first")
def test_pvh_start_info():
    cfg = config(SMP_ELF, memory=32)
    cfg.cmdline = "hello"
    ram = FakeRAM(32)
    b = build_hvm(cfg, ram)
    assert b.kind == layout.BOOT_PVH and b.entry == cfg.hvm_image.entry
    si = struct.unpack_from("<IIIIQQQQII", ram.read(layout.BOOT_DATA, 56))
    magic, ver, flags, nmod, modl, cmd, rsdp, mm, nmm, _ = si
    assert magic == XEN_HVM_START_MAGIC and ver == 1 and nmod == 0
    assert ram.read(cmd, 6) == b"hello\0" and rsdp == 0       # the loader fills rsdp_paddr
    assert nmm == len(layout.build_e820(32 << 20))
    assert struct.unpack_from("<QQII", ram.read(mm, 24)) == (0, 0x9F800, 1, 0)


@pytest.mark.skipif(not PV_ELF.exists(), reason="run 'make' first")
def test_pv_kernel_is_not_an_hvm_guest():
    with pytest.raises(ImageError, match="PV kernel"):
        load_hvm_image(str(PV_ELF))


def test_raw_image_needs_realmode_entry(tmp_path):
    p = tmp_path / "raw.bin"
    p.write_bytes(b"\xeb\xfe" + bytes(510))
    with pytest.raises(ImageError, match="realmode_entry"):
        load_hvm_image(str(p))
    cfg = config(p, memory=16, realmode_entry=(0, 0x7C00))
    ram = FakeRAM(16)
    b = build_hvm(cfg, ram)
    assert b.kind == layout.BOOT_REALMODE and b.entry == 0x7C00
    assert ram.read(0x7C00, 2) == b"\xeb\xfe"


@pytest.mark.parametrize("entry,match", [((0x1000, 0), "hvmloader"), ((0x9000, 0xF800), "boot data|reserved"),
                                         ((0xF000, 0xFFF0), "below 1 MiB")])
def test_realmode_image_placement_is_checked(tmp_path, entry, match):
    p = tmp_path / "raw.bin"
    p.write_bytes(bytes(4096))
    with pytest.raises(ImageError, match=match):
        build_hvm(config(p, memory=16, realmode_entry=entry), FakeRAM(16))


def test_missing_kernel(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_hvm_image(str(tmp_path / "nope"))
