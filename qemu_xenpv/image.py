"""Reading a Xen PV kernel: ELF32 checks, the Xen ELF notes (from PT_NOTE
segments and, as Mini-OS ships them, SHT_NOTE sections) or the legacy
``__xen_guest`` string, and the address rules of Xen's libelf."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from . import abi
from .errors import ImageError

UNSET = None


@dataclass
class Segment:
    vaddr: int          # where the guest sees it (paddr + virt_offset)
    data: bytes
    memsz: int


@dataclass
class KernelImage:
    path: str
    guest_os: str = ""
    guest_version: str = ""
    xen_version: str = ""
    loader: str = ""
    pae: str = "no"             # "no", "yes", "extended-cr3", "bimodal"
    virt_base: int = 0
    paddr_offset: int = 0
    entry: int = 0
    hypercall_page: Optional[int] = None
    hv_start_low: Optional[int] = None
    features_supported: int = 0
    features_required: int = 0
    notes: Dict[str, object] = field(default_factory=dict)
    segments: List[Segment] = field(default_factory=list)
    kstart: int = 0
    kend: int = 0
    symbols_file: Optional[str] = None

    @property
    def is_pae(self) -> bool:
        return self.pae != "no"

    @property
    def guest_type(self) -> str:
        return "xen-3.0-x86_32p" if self.is_pae else "xen-3.0-x86_32"


def parse_features(text: str) -> Tuple[int, int]:
    """FEATURES note: 'a|!b|c' -> (supported bitmap, required bitmap)."""
    names = {v: k for k, v in abi.XENFEAT_NAMES.items()}
    sup = req = 0
    for item in filter(None, text.split("|")):
        required = item.startswith("!")
        name = item[1:] if required else item
        bit = names.get(name)
        if bit is None:
            if required:
                raise ImageError(f"kernel requires unknown Xen feature '{name}'")
            continue
        sup |= 1 << bit
        if required:
            req |= 1 << bit
    return sup, req


def _note_value(desc: bytes, kind: str):
    if kind == "str":
        return desc.split(b"\0", 1)[0].decode("latin-1")
    if len(desc) >= 8:
        return struct.unpack_from("<Q", desc)[0]
    if len(desc) >= 4:
        return struct.unpack_from("<I", desc)[0]
    return int.from_bytes(desc, "little")


_STRING_NOTES = {"GUEST_OS", "GUEST_VERSION", "XEN_VERSION", "LOADER", "PAE_MODE",
                 "FEATURES", "BSD_SYMTAB"}


def _iter_notes(data: bytes):
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        off += 12
        name = data[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        desc = data[off:off + descsz]
        off += (descsz + 3) & ~3
        yield name, ntype, desc


def _bsd_symtab_parts(f, elf):
    """The .symtab section header and data, and its string table's."""
    sym = elf.get_section_by_name(".symtab")
    if sym is None:
        return None
    strtab = elf.get_section(sym["sh_link"])
    if strtab is None or strtab["sh_type"] != "SHT_STRTAB":
        return None
    f.seek(elf["e_shoff"] + elf["e_shentsize"] * elf.get_section_index(".symtab"))
    sym_hdr = f.read(40)
    f.seek(elf["e_shoff"] + elf["e_shentsize"] * sym["sh_link"])
    str_hdr = f.read(40)
    return sym_hdr, sym.data(), str_hdr, strtab.data()


def _bsd_symtab_blob(ehdr: bytes, parts):
    """libelf's elf_load_bsdsyms image: u32 size, an ELF header with three
    section headers (null, symtab, strtab), then the two tables; offsets
    are relative to the ELF header.  Returns (blob, bytes libelf reserves)."""
    sym_hdr, sym_data, str_hdr, str_data = parts
    up = lambda x: (x + 3) & ~3                                     # noqa: E731
    header_size = 4 + 64                        # size + union elf_ehdr
    symtab_off = up(4 + 64 + 3 * 64)            # sizeof(struct elf_sym_header)
    strtab_off = up(symtab_off + len(sym_data))
    eh = bytearray(ehdr[:52])
    struct.pack_into("<I", eh, 20, 1)           # e_version
    struct.pack_into("<I", eh, 28, 0)           # e_phoff
    struct.pack_into("<I", eh, 32, 64)          # e_shoff
    struct.pack_into("<HHHHHH", eh, 40, 52, 0, 0, 40, 3, 0)   # ehsize phentsize phnum shentsize shnum shstrndx
    s1 = bytearray(sym_hdr)
    struct.pack_into("<I", s1, 16, symtab_off - 4)              # sh_offset from the ELF header
    struct.pack_into("<I", s1, 24, 2)                           # sh_link -> strtab
    s2 = bytearray(str_hdr)
    struct.pack_into("<I", s2, 16, strtab_off - 4)
    blob = bytearray(strtab_off + len(str_data))
    struct.pack_into("<I", blob, 0, strtab_off + len(str_data) - 4)
    blob[4:56] = eh
    blob[header_size + 40:header_size + 80] = s1
    blob[header_size + 80:header_size + 120] = s2
    blob[symtab_off:symtab_off + len(sym_data)] = sym_data
    blob[strtab_off:strtab_off + len(str_data)] = str_data
    reserved = up(up(up(4 + header_size + 3 * 40) + len(sym_data)) + len(str_data))
    return bytes(blob), reserved


def load_kernel(path) -> KernelImage:
    path = str(path)
    if not os.path.exists(path):
        raise ImageError(f"kernel '{path}' not found")
    if not os.path.isfile(path):
        raise ImageError(f"kernel '{path}' is not a regular file")
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise ImageError(f"kernel '{path}' is not an ELF file (a Xen PV kernel is an ELF image "
                             "with Xen notes; bzImage/HVM kernels need builder='hvm')")
        if head[4] == 2:
            raise ImageError(f"kernel '{path}' is a 64-bit ELF: qemu-xenpv runs 32-bit PV guests "
                             "(xen-3.0-x86_32p / x86_32)")
        if head[4] != 1 or head[5] != 1:
            raise ImageError(f"kernel '{path}' is not a little-endian 32-bit ELF")
        f.seek(0)
        try:
            elf = ELFFile(f)
            if elf["e_machine"] != "EM_386":
                raise ImageError(f"kernel '{path}' is for {elf['e_machine']}, not i386")
            img = KernelImage(path=path)
            raw_notes: Dict[int, bytes] = {}
            seen_notes = False
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_NOTE":
                    for name, ntype, desc in _iter_notes(seg.data()):
                        if name == b"Xen":
                            raw_notes.setdefault(ntype, desc)
                            seen_notes = True
            for sec in elf.iter_sections():
                if sec["sh_type"] == "SHT_NOTE":
                    for name, ntype, desc in _iter_notes(sec.data()):
                        if name == b"Xen":
                            raw_notes.setdefault(ntype, desc)
                            seen_notes = True
            legacy_sec = elf.get_section_by_name("__xen_guest")
            legacy = legacy_sec.data() if legacy_sec is not None else None
            segments = [(s["p_paddr"], s.data(), s["p_memsz"]) for s in elf.iter_segments()
                        if s["p_type"] == "PT_LOAD" and s["p_memsz"]]
            e_entry = elf["e_entry"]
            has_syms = elf.get_section_by_name(".symtab") is not None
            bsd = _bsd_symtab_parts(f, elf)
        except ELFError as e:
            raise ImageError(f"kernel '{path}' is a malformed ELF file: {e}") from None

    virt_base = paddr_offset = entry = None
    if seen_notes:
        for ntype, desc in raw_notes.items():
            name = abi.XEN_ELFNOTE.get(ntype)
            if name is None:
                continue
            val = _note_value(desc, "str" if name in _STRING_NOTES else "num")
            img.notes[name] = val
        n = img.notes
        img.guest_os = n.get("GUEST_OS", "")
        img.guest_version = n.get("GUEST_VERSION", "")
        img.xen_version = n.get("XEN_VERSION", "")
        img.loader = n.get("LOADER", "")
        pae = n.get("PAE_MODE")
        if pae == "yes":
            img.pae = "extended-cr3"
        elif pae and "bimodal" in pae:
            img.pae = "bimodal"
        virt_base = n.get("VIRT_BASE")
        paddr_offset = n.get("PADDR_OFFSET")
        entry = n.get("ENTRY")
        img.hypercall_page = n.get("HYPERCALL_PAGE")
        img.hv_start_low = n.get("HV_START_LOW")
        if "FEATURES" in n:
            img.features_supported, img.features_required = parse_features(n["FEATURES"])
    elif legacy is not None:
        text = legacy.split(b"\0", 1)[0].decode("latin-1")
        kv = {}
        for item in text.split(","):
            k, _, v = item.partition("=")
            kv[k] = v
        img.notes = dict(kv)
        img.guest_os = kv.get("GUEST_OS", "")
        img.xen_version = kv.get("XEN_VER", "")
        img.loader = kv.get("LOADER", "")
        if kv.get("PAE", "").startswith("yes"):
            img.pae = "extended-cr3" if kv["PAE"] == "yes[extended-cr3]" else "yes"
        if "VIRT_BASE" in kv:
            virt_base = int(kv["VIRT_BASE"], 0)
        if "ELF_PADDR_OFFSET" in kv:
            paddr_offset = int(kv["ELF_PADDR_OFFSET"], 0)
        if "VIRT_ENTRY" in kv:
            entry = int(kv["VIRT_ENTRY"], 0)
        if "HYPERCALL_PAGE" in kv:
            img.hypercall_page = int(kv["HYPERCALL_PAGE"], 0) << 12
        if "FEATURES" in kv:
            img.features_supported, img.features_required = parse_features(kv["FEATURES"])
    else:
        raise ImageError(f"kernel '{path}' has no Xen ELF notes: it is not a Xen PV kernel "
                         "(need XEN_ELFNOTE_* notes or a __xen_guest section)")

    # libelf's address rules (elf_xen_addr_calc_check)
    if paddr_offset is not None and virt_base is None:
        raise ImageError(f"kernel '{path}': ELF_PADDR_OFFSET set but VIRT_BASE unset")
    if virt_base is None:
        virt_base = 0
    if paddr_offset is None:
        paddr_offset = 0 if seen_notes else virt_base
    if legacy is not None and not seen_notes and img.hypercall_page is not None:
        img.hypercall_page += virt_base
    if not segments:
        raise ImageError(f"kernel '{path}' has no loadable segments")
    virt_offset = (virt_base - paddr_offset) & 0xFFFFFFFF
    img.virt_base = virt_base
    img.paddr_offset = paddr_offset
    pstart = min(p for p, _, _ in segments)
    pend = max(p + m for p, _, m in segments)
    if img.notes.get("BSD_SYMTAB") == "yes" and bsd is not None:
        blob_at = (pend + 3) & ~3
        blob, reserved = _bsd_symtab_blob(head, bsd)
        segments.append((blob_at, blob, len(blob)))
        pend = blob_at + max(reserved, len(blob))
    img.kstart = (pstart + virt_offset) & 0xFFFFFFFF
    img.kend = (pend + virt_offset) & 0xFFFFFFFF
    img.entry = entry if entry is not None else e_entry
    img.segments = [Segment((p + virt_offset) & 0xFFFFFFFF, d, m) for p, d, m in segments]
    if not (img.kstart <= img.entry < img.kend) or img.virt_base > img.kstart:
        raise ImageError(f"kernel '{path}': entry point or load addresses out of bounds")
    hole = abi.HYPERVISOR_VIRT_START_PAE if img.is_pae else abi.HYPERVISOR_VIRT_START_NONPAE
    if img.kend > hole:
        raise ImageError(f"kernel '{path}' overlaps the hypervisor hole at {hole:#x}")
    if img.hypercall_page is not None and not (img.kstart <= img.hypercall_page < img.kend):
        raise ImageError(f"kernel '{path}': hypercall page {img.hypercall_page:#x} is outside the image")
    if img.loader and img.loader != "generic":
        raise ImageError(f"kernel '{path}' wants loader '{img.loader}'; only 'generic' is supported")
    img.symbols_file = path if has_syms else None
    return img
