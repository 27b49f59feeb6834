"""What a crashed guest looked like: registers, the code location with
symbols when the kernel ELF has them, the stack and a frame-pointer
backtrace, in the spirit of Xen's domain_crash output."""

from __future__ import annotations

import bisect
from functools import lru_cache
from typing import List, Optional, Tuple

from elftools.elf.elffile import ELFFile


@lru_cache(maxsize=16)
def _symbols(path: str) -> Tuple[List[int], List[Tuple[int, int, str]]]:
    syms = []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            tab = elf.get_section_by_name(".symtab")
            if tab is not None:
                for s in tab.iter_symbols():
                    if s["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE") and s.name and s["st_value"]:
                        syms.append((s["st_value"], s["st_size"], s.name))
    except Exception:
        pass
    syms.sort()
    return [a for a, _, _ in syms], syms


def symbolize(path: Optional[str], addr: int) -> str:
    if not path:
        return ""
    keys, syms = _symbols(path)
    i = bisect.bisect_right(keys, addr) - 1
    if i < 0:
        return ""
    start, size, name = syms[i]
    if size and addr >= start + size:
        return ""
    if addr - start > 0x10000:
        return ""
    return f"{name}+{addr - start:#x}" + (f"/{size:#x}" if size else "")


def register_dump(dom, vcpu, r: dict) -> List[str]:
    sym_path = dom.config.kernel_image.symbols_file if dom.config.kernel_image else None

    def loc(a: int) -> str:
        s = symbolize(sym_path, a)
        return f"[<{a:08x}>] {s}" if s else f"[<{a:08x}>]"

    out = [f"d{dom.domid}v{vcpu.vid} ({dom.name}) crashed:",
           f"EIP:    {r['cs']:04x}:{loc(r['eip'])}",
           f"EFLAGS: {r['eflags']:08x}   CONTEXT: pv guest, ring {r['cs'] & 3}",
           f"eax: {r['eax']:08x}   ebx: {r['ebx']:08x}   ecx: {r['ecx']:08x}   edx: {r['edx']:08x}",
           f"esi: {r['esi']:08x}   edi: {r['edi']:08x}   ebp: {r['ebp']:08x}   esp: {r['esp']:08x}",
           f"cr2: {dom.ram.r32(vcpu.vcpu_info_pa + 8):08x}   cr3: {(vcpu.guest_table or 0) << 12:08x}",
           f"ds: {r['ds'] & 0xffff:04x}   es: {r['es'] & 0xffff:04x}   fs: {r['fs'] & 0xffff:04x}   "
           f"gs: {r['gs'] & 0xffff:04x}   ss: {r['ss'] & 0xffff:04x}   cs: {r['cs'] & 0xffff:04x}"]
    try:
        last = {f: vcpu.mbox.get("last_trap_" + f) for f in ("vector", "errcode", "eip", "cs", "cr2")}
    except Exception:
        last = {"vector": 0}
    if last["vector"]:
        vec = last["vector"] - 1
        from .traps import VECTOR_NAMES
        out.append(f"Last exception bounced to the guest: {vec} "
                   f"({VECTOR_NAMES.get(vec, 'vector')}), error code {last['errcode']:#x}"
                   + (f", cr2 {last['cr2']:08x}" if vec == 14 else ""))
        out.append(f"    at {last['cs'] & 0xffff:04x}:{loc(last['eip'])}")
    stack = dom.copy_from_guest(vcpu, r["esp"], 64) if vcpu.guest_table else None
    if stack:
        out.append(f"Guest stack trace from esp={r['esp']:08x}:")
        words = [int.from_bytes(stack[i:i + 4], "little") for i in range(0, len(stack), 4)]
        for i in range(0, len(words), 8):
            out.append("   " + " ".join(f"{w:08x}" for w in words[i:i + 8]))
    if sym_path and vcpu.guest_table:
        out.append("Call trace (frame pointers):")
        out.append(f"   {loc(r['eip'])}")
        ebp = r["ebp"]
        for _ in range(16):
            fr = dom.copy_from_guest(vcpu, ebp, 8) if ebp else None
            if not fr:
                break
            nxt, ret = int.from_bytes(fr[:4], "little"), int.from_bytes(fr[4:], "little")
            if not ret:
                break
            out.append(f"   {loc(ret)}")
            if nxt <= ebp:
                break
            ebp = nxt
    return out
