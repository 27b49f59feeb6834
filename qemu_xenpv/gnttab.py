"""Grant tables, version 1 (Xen's common/grant_table.c), as a pure engine.

A domain's grant table is a few of its own frames holding 8-byte
``grant_entry_v1`` records {flags u16, domid u16, frame u32} that the guest
writes directly (512 per frame).  Xen keeps, next to them, a private
*active* entry per reference: who pinned it, how often (host/device,
read/write) and which frame.  While an entry is pinned Xen sets GTF_reading
(and GTF_writing for a writable pin) in the shared flags with a
compare-and-swap, so the granting guest can tell it is in use and must not
revoke it; the bits are cleared again when the last pin goes.

Here every domain is its own QEMU machine, so only three kinds of use make
sense and are implemented:

* domain 0 (this Python process) maps a granted frame: :meth:`GrantEngine.
  map_grant_ref` returns a :class:`GrantMapping` whose ``view`` is the frame
  in the granter's shared RAM; :meth:`GrantEngine.unmap_grant_ref` ends it;
* grant copies between any two domains, either side by grant reference or
  (for the calling guest's own memory) by frame: :meth:`GrantEngine.copy`,
  and for domain 0 :meth:`GrantEngine.copy_from_grant` / ``copy_to_grant``;
* the table management a guest does on itself (setup_table, query_size,
  set/get_version, swap_grant_ref).

Every check and every GNTST_* answer follows Xen; the engine takes no lock:
callers hold the hypervisor lock.  Frame ownership and the writable-type
rule (a page table may never be written through a grant) are asked of the
granting domain through the callables given to :class:`GrantTable`.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence

from . import abi

log = logging.getLogger("qemu_xenpv.gnttab")

ENTRY_SIZE = 8
ENTRIES_PER_FRAME = abi.PAGE_SIZE // ENTRY_SIZE
PAGE = abi.PAGE_SIZE

GNTST_okay, GNTST_general_error, GNTST_bad_domain, GNTST_bad_gntref = 0, -1, -2, -3
GNTST_bad_handle, GNTST_bad_virt_addr, GNTST_bad_dev_addr = -4, -5, -6
GNTST_no_device_space, GNTST_permission_denied, GNTST_bad_page = -7, -8, -9
GNTST_bad_copy_arg, GNTST_address_too_big, GNTST_eagain, GNTST_no_space = -10, -11, -12, -13

PIN_MAX = 0xFF                  # each of Xen's four pin counters is 8 bits wide
CAS_RETRIES = 5                 # Xen gives up on an entry the guest keeps changing
DEFAULT_MAX_MAPTRACK = 65536    # handles domain 0 may hold at once


class GrantError(Exception):
    """A grant operation failed with GNTST ``status`` (negative)."""

    def __init__(self, status: int, detail: str = ""):
        name = abi.GNTST.get(status, str(status))
        super().__init__(f"GNTST_{name}" + (f": {detail}" if detail else ""))
        self.status = status


class Active:
    """Xen's active_grant_entry: pins by kind, the pinning domain, the frame."""

    __slots__ = ("host_w", "host_r", "dev_w", "dev_r", "domid", "mfn")

    def __init__(self):
        self.host_w = self.host_r = self.dev_w = self.dev_r = 0
        self.domid = 0
        self.mfn = 0

    @property
    def pin(self) -> int:
        return self.host_w + self.host_r + self.dev_w + self.dev_r

    @property
    def writable(self) -> int:
        return self.host_w + self.dev_w


def _pin_kinds(flags: int) -> List[str]:
    """The pin counters one map operation with these GNTMAP flags bumps."""
    ro = flags & abi.GNTMAP_readonly
    kinds = []
    if flags & abi.GNTMAP_device_map:
        kinds.append("dev_r" if ro else "dev_w")
    if flags & abi.GNTMAP_host_map:
        kinds.append("host_r" if ro else "host_w")
    return kinds


class GrantTable:
    """One domain's grant table.

    ``ram``: the domain's machine memory (``r32``, ``cmpxchg32``,
    ``test_and_clear_bit``, ``read``, ``write``, ``zero``, ``view``).
    ``frames``: the machine frames of the table (grow by taking ``spare``
    ones, up to ``max_frames``).  ``owns(mfn)``: the frame is this domain's.
    ``get_writable(mfn) -> bool`` / ``put_writable(mfn)``: take and drop a
    writable type reference (refused for page tables and descriptor pages).
    A table without ``ram`` is empty (domain 0 has no memory to grant).
    """

    def __init__(self, domid: int, ram=None, frames: Sequence[int] = (), *,
                 max_frames: int = 1, spare: Sequence[int] = (),
                 owns: Optional[Callable[[int], bool]] = None,
                 get_writable: Optional[Callable[[int], bool]] = None,
                 put_writable: Optional[Callable[[int], None]] = None):
        self.domid = domid
        self.ram = ram
        self.frames: List[int] = list(frames)
        self.spare: List[int] = list(spare)
        self.max_frames = max(max_frames, len(self.frames))
        self.version = 1
        self.active: Dict[int, Active] = {}
        self._owns = owns or (lambda mfn: False)
        self._get_writable = get_writable or (lambda mfn: True)
        self._put_writable = put_writable or (lambda mfn: None)
        self.dead = False

    # ---- the shared entries ----
    @property
    def nr_entries(self) -> int:
        return 0 if self.dead or self.ram is None else len(self.frames) * ENTRIES_PER_FRAME

    def entry_addr(self, ref: int) -> int:
        return (self.frames[ref // ENTRIES_PER_FRAME] << 12) + (ref % ENTRIES_PER_FRAME) * ENTRY_SIZE

    def entry(self, ref: int) -> tuple:
        """(flags, domid, frame) of a valid ``ref``, as the guest wrote it."""
        pa = self.entry_addr(ref)
        combo = self.ram.r32(pa)
        return combo & 0xFFFF, combo >> 16, self.ram.r32(pa + 4)

    def write_entry(self, ref: int, flags: int, domid: int, frame: int) -> None:
        """Write an entry as its guest would (frame first, flags last)."""
        pa = self.entry_addr(ref)
        self.ram.w32(pa + 4, frame)
        self.ram.w32(pa, (flags & 0xFFFF) | (domid << 16))

    def owns(self, mfn: int) -> bool:
        return self.ram is not None and not self.dead and self._owns(mfn)

    def get_writable(self, mfn: int) -> bool:
        return self._get_writable(mfn)

    def put_writable(self, mfn: int) -> None:
        self._put_writable(mfn)

    def act(self, ref: int) -> Active:
        a = self.active.get(ref)
        if a is None:
            a = self.active[ref] = Active()
        return a

    def in_use(self, ref: int) -> bool:
        a = self.active.get(ref)
        return a is not None and a.pin > 0

    # ---- table management (the guest on itself) ----
    def grow(self, nr_frames: int) -> bool:
        """gnttab_grow_table(): at least ``nr_frames`` frames, zeroed."""
        if nr_frames > self.max_frames:
            return False
        while len(self.frames) < nr_frames:
            if not self.spare:
                return False
            mfn = self.spare.pop(0)
            self.ram.zero(mfn << 12, PAGE)
            self.frames.append(mfn)
        return True

    def setup(self, nr_frames: int) -> tuple:
        """GNTTABOP_setup_table: (status, frame list)."""
        if nr_frames > self.max_frames:
            log.info("d%d is limited to %d grant-table frames", self.domid, self.max_frames)
            return GNTST_general_error, []
        if nr_frames > len(self.frames) and not self.grow(nr_frames):
            return GNTST_general_error, []
        return GNTST_okay, self.frames[:nr_frames]

    def set_version(self, version: int) -> int:
        """GNTTABOP_set_version: v1 only, answered as a Xen whose
        max_grant_version is 1 (v2 is -ENOSYS, 'as before set_version')."""
        if version not in (1, 2):
            return -abi.EINVAL
        if version == 2:
            return -abi.ENOSYS
        return 0

    def swap(self, ref_a: int, ref_b: int) -> int:
        """GNTTABOP_swap_grant_ref."""
        n = self.nr_entries
        if ref_a >= n or ref_b >= n:
            return GNTST_bad_gntref
        if ref_a == ref_b:
            return GNTST_okay
        if self.in_use(ref_a) or self.in_use(ref_b):
            return GNTST_eagain
        a, b = self.entry_addr(ref_a), self.entry_addr(ref_b)
        ea, eb = self.ram.read(a, ENTRY_SIZE), self.ram.read(b, ENTRY_SIZE)
        self.ram.write(a, eb)
        self.ram.write(b, ea)
        return GNTST_okay

    # ---- pinning (the granter's side of map and copy) ----
    def _set_status(self, ref: int, act: Active, readonly: bool, mapping: bool,
                    ldomid: int) -> int:
        """_set_status_v1(): check the entry and set GTF_reading/GTF_writing
        with a bounded compare-and-swap on the flags+domid word."""
        pa = self.entry_addr(ref)
        mask = abi.GTF_type_mask | (abi.GTF_sub_page if mapping else 0)
        combo = self.ram.r32(pa)
        for _ in range(CAS_RETRIES):
            flags, domid = combo & 0xFFFF, combo >> 16
            if not act.pin and ((flags & mask) != abi.GTF_permit_access or domid != ldomid):
                log.info("d%d ref %d: bad flags (%#x) or dom (%d); expected d%d",
                         self.domid, ref, flags, domid, ldomid)
                return GNTST_general_error
            new = flags | abi.GTF_reading
            if not readonly:
                new |= abi.GTF_writing
                if flags & abi.GTF_readonly:
                    log.info("d%d ref %d: attempt to write-pin a r/o grant entry",
                             self.domid, ref)
                    return GNTST_general_error
            prev = self.ram.cmpxchg32(pa, combo, (combo & 0xFFFF0000) | new)
            if prev == combo:
                return GNTST_okay
            combo = prev
        log.info("d%d ref %d: shared grant entry is unstable", self.domid, ref)
        return GNTST_general_error

    def _reduce_status(self, ref: int, act: Active, readonly: bool) -> None:
        """reduce_status_for_pin(): drop the in-use bits the pins no longer justify."""
        pa = self.entry_addr(ref)
        if not act.pin:
            self.ram.test_and_clear_bit(pa, 3)          # GTF_reading
        if not readonly and not act.writable:
            self.ram.test_and_clear_bit(pa, 4)          # GTF_writing

    def pin(self, ref: int, ldomid: int, kinds: Sequence[str], readonly: bool,
            mapping: bool) -> tuple:
        """Pin ``ref`` for ``ldomid`` (map_grant_ref / acquire_grant_for_copy):
        (GNTST status, mfn)."""
        if ref >= self.nr_entries:
            log.info("d%d: bad grant ref %#x", self.domid, ref)
            return GNTST_bad_gntref, 0
        act = self.act(ref)
        if act.pin and (act.domid != ldomid or
                        any(getattr(act, k) >= PIN_MAX for k in kinds)):
            log.info("d%d ref %d: pinned by d%d (not d%d) or pin count overflow",
                     self.domid, ref, act.domid, ldomid)
            return GNTST_general_error, 0
        if not act.pin or (not readonly and not act.writable):
            rc = self._set_status(ref, act, readonly, mapping, ldomid)
            if rc:
                return rc, 0
            frame = self.entry(ref)[2]
            if not act.pin:
                if not self.owns(frame):
                    self._reduce_status(ref, act, readonly)
                    log.info("d%d ref %d: frame %#x is not the granter's", self.domid, ref, frame)
                    return GNTST_bad_page, 0
                act.domid = ldomid
                act.mfn = frame
            elif not mapping and frame != act.mfn:
                self._reduce_status(ref, act, readonly)
                return GNTST_general_error, 0
        for k in kinds:
            setattr(act, k, getattr(act, k) + 1)
        return GNTST_okay, act.mfn

    def unpin(self, ref: int, kinds: Sequence[str], readonly: bool) -> None:
        """Undo one :meth:`pin` (unmap_common_complete / release_grant_for_copy)."""
        act = self.active.get(ref)
        if act is None:
            return
        for k in kinds:
            if getattr(act, k):
                setattr(act, k, getattr(act, k) - 1)
        if not self.dead and ref < self.nr_entries:
            self._reduce_status(ref, act, readonly)
        if not act.pin:
            del self.active[ref]


class GrantMapping:
    """Domain 0's mapping of a granted frame: ``view`` is the frame itself in
    the granter's RAM (read-only if mapped read-only).  Valid until
    :meth:`GrantEngine.unmap_grant_ref`, or until the granter is destroyed
    (then ``revoked`` is set and the view is released)."""

    def __init__(self, handle: int, domid: int, ref: int, mfn: int, flags: int, view):
        self.handle = handle
        self.domid = domid
        self.ref = ref
        self.mfn = mfn
        self.flags = flags
        self._view = view
        self.revoked = False

    @property
    def readonly(self) -> bool:
        return bool(self.flags & abi.GNTMAP_readonly)

    @property
    def dev_bus_addr(self) -> int:
        return self.mfn << 12

    @property
    def view(self) -> memoryview:
        if self._view is None:
            raise GrantError(GNTST_bad_handle, f"handle {self.handle} is no longer mapped")
        return self._view.toreadonly() if self.readonly else self._view

    def read(self, offset: int = 0, length: int = PAGE) -> bytes:
        if offset < 0 or length < 0 or offset + length > PAGE:
            raise GrantError(GNTST_bad_copy_arg, "outside the page")
        return bytes(self.view[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        if self.readonly:
            raise GrantError(GNTST_permission_denied, "mapped read-only")
        if offset < 0 or offset + len(data) > PAGE:
            raise GrantError(GNTST_bad_copy_arg, "outside the page")
        self.view[offset:offset + len(data)] = data

    def _release(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None

    def __repr__(self) -> str:
        return (f"<grant mapping handle {self.handle}: d{self.domid} ref {self.ref} "
                f"mfn {self.mfn:#x}{' ro' if self.readonly else ''}"
                f"{' revoked' if self.revoked else ''}>")


class _Buf:
    """One side of a copy, claimed (gnttab_copy_buf)."""

    __slots__ = ("table", "ref", "mfn", "readonly", "kinds", "typed")

    def __init__(self, table, ref, mfn, readonly, kinds, typed):
        self.table, self.ref, self.mfn = table, ref, mfn
        self.readonly, self.kinds, self.typed = readonly, kinds, typed

    def release(self) -> None:
        if self.typed:
            self.table.put_writable(self.mfn)
        if self.ref is not None:
            self.table.unpin(self.ref, self.kinds, self.readonly)


class GrantEngine:
    """Grant operations across domains.  ``lookup(domid)`` gives a domain's
    :class:`GrantTable` (domain 0's is empty) or None if there is no such
    domain.  Domain 0's mappings are tracked here (its maptrack table)."""

    def __init__(self, lookup: Callable[[int], Optional[GrantTable]],
                 max_maptrack: int = DEFAULT_MAX_MAPTRACK):
        self.lookup = lookup
        self.max_maptrack = max_maptrack
        self.maptrack: Dict[int, GrantMapping] = {}
        self._next_handle = 0

    def _table(self, domid: int, ldomid: int) -> Optional[GrantTable]:
        return self.lookup(ldomid if domid == abi.DOMID_SELF else domid)

    # ---- domain 0 maps a granted frame ----
    def map_grant_ref(self, domid: int, ref: int, readonly: bool = False,
                      flags: int = abi.GNTMAP_host_map) -> GrantMapping:
        """GNTTABOP_map_grant_ref by domain 0.  Raises GrantError."""
        if readonly:
            flags |= abi.GNTMAP_readonly
        kinds = _pin_kinds(flags)
        if not kinds:
            raise GrantError(GNTST_bad_gntref, f"bad flags {flags:#x} in grant map op")
        rt = self.lookup(domid)
        if rt is None:
            raise GrantError(GNTST_bad_domain, f"no domain {domid}")
        if len(self.maptrack) >= self.max_maptrack:
            raise GrantError(GNTST_no_space, "no maptrack handle left")
        ro = bool(flags & abi.GNTMAP_readonly)
        rc, mfn = rt.pin(ref, 0, kinds, ro, mapping=True)
        if rc:
            raise GrantError(rc, f"d{domid} ref {ref}")
        if not ro and not rt.get_writable(mfn):
            rt.unpin(ref, kinds, ro)
            raise GrantError(GNTST_general_error,
                             f"d{domid} ref {ref}: frame {mfn:#x} cannot be written")
        handle = self._alloc_handle()
        m = GrantMapping(handle, domid, ref, mfn, flags, rt.ram.view(mfn << 12, PAGE))
        self.maptrack[handle] = m
        return m

    def _alloc_handle(self) -> int:
        h = self._next_handle
        while h in self.maptrack:
            h = (h + 1) % self.max_maptrack
        self._next_handle = (h + 1) % self.max_maptrack
        return h

    def unmap_grant_ref(self, handle) -> None:
        """GNTTABOP_unmap_grant_ref by domain 0 (a handle or the mapping).
        Raises GrantError(GNTST_bad_handle) for an unknown handle."""
        if isinstance(handle, GrantMapping):
            handle = handle.handle
        m = self.maptrack.get(handle)
        if m is None:
            raise GrantError(GNTST_bad_handle, f"handle {handle}")
        del self.maptrack[handle]
        m._release()
        if m.revoked:
            return
        rt = self.lookup(m.domid)
        if rt is None:
            return
        kinds = _pin_kinds(m.flags)
        if not m.readonly:
            rt.put_writable(m.mfn)
        rt.unpin(m.ref, kinds, m.readonly)

    def mappings(self, domid: Optional[int] = None) -> List[GrantMapping]:
        return [m for m in self.maptrack.values() if domid is None or m.domid == domid]

    def domain_destroyed(self, domid: int) -> None:
        """The granter is going away: release domain 0's views of its frames
        (so its RAM can be unmapped); the handles stay until unmapped."""
        for m in self.mappings(domid):
            if not m.revoked:
                m.revoked = True
                m._release()
        t = self.lookup(domid)
        if t is not None:
            t.dead = True
            t.active.clear()

    # ---- copies ----
    def copy(self, op: dict, ldomid: int) -> int:
        """One gnttab_copy for domain ``ldomid`` (a guest's hypercall, or 0).
        ``op``: the abi.gnttab_copy fields.  Returns the GNTST status."""
        length = op["len"]
        if not length:
            return GNTST_okay
        sides = []
        for side, gflag in (("source", abi.GNTCOPY_source_gref), ("dest", abi.GNTCOPY_dest_gref)):
            domid, is_gref = op[side + "_domid"], bool(op["flags"] & gflag)
            if domid != abi.DOMID_SELF and not is_gref:     # only DOMID_SELF by frame
                return GNTST_permission_denied
            t = self._table(domid, ldomid)
            if t is None:
                return GNTST_bad_domain
            sides.append((t, is_gref, op[side + "_u"]))
        (st, sg, su), (dt, dg, du) = sides
        src = dst = None
        try:
            rc, src = self._claim(st, sg, su, ldomid, readonly=True)
            if rc:
                return rc
            rc, dst = self._claim(dt, dg, du, ldomid, readonly=False)
            if rc:
                return rc
            so, do = op["source_offset"], op["dest_offset"]
            if so + length > PAGE or do + length > PAGE:
                log.info("d%d: copy beyond page area", ldomid)
                return GNTST_bad_copy_arg
            data = st.ram.read((src.mfn << 12) + so, length)
            dt.ram.write((dst.mfn << 12) + do, data)
            return GNTST_okay
        finally:
            for b in (src, dst):
                if b is not None:
                    b.release()

    def _claim(self, t: GrantTable, is_gref: bool, u: int, ldomid: int,
               readonly: bool) -> tuple:
        """gnttab_copy_claim_buf(): pin a grant, or check one of our own frames."""
        kinds = ["host_r" if readonly else "host_w"]
        if is_gref:
            rc, mfn = t.pin(u, ldomid, kinds, readonly, mapping=False)
            if rc:
                return rc, None
            buf = _Buf(t, u, mfn, readonly, kinds, False)
        else:
            if not t.owns(u):
                log.info("d%d: frame %#x invalid for copy", ldomid, u)
                return GNTST_bad_page, None
            buf = _Buf(t, None, u, readonly, kinds, False)
        if not readonly:
            if not t.get_writable(buf.mfn):
                buf.release()
                log.info("d%d: could not get writable frame %#x", ldomid, buf.mfn)
                return GNTST_general_error, None
            buf.typed = True
        return GNTST_okay, buf

    def copy_from_grant(self, domid: int, ref: int, offset: int = 0,
                        length: int = PAGE) -> bytes:
        """Domain 0 reads from a frame ``domid`` granted it (GNTCOPY_source_gref)."""
        if offset < 0 or length < 0 or offset + length > PAGE:
            raise GrantError(GNTST_bad_copy_arg, "copy beyond page area")
        t = self.lookup(domid)
        if t is None:
            raise GrantError(GNTST_bad_domain, f"no domain {domid}")
        if not length:
            return b""
        rc, buf = self._claim(t, True, ref, 0, readonly=True)
        if rc:
            raise GrantError(rc, f"d{domid} ref {ref}")
        try:
            return t.ram.read((buf.mfn << 12) + offset, length)
        finally:
            buf.release()

    def copy_to_grant(self, domid: int, ref: int, offset: int, data: bytes) -> None:
        """Domain 0 writes into a frame ``domid`` granted it (GNTCOPY_dest_gref)."""
        if offset < 0 or offset + len(data) > PAGE:
            raise GrantError(GNTST_bad_copy_arg, "copy beyond page area")
        t = self.lookup(domid)
        if t is None:
            raise GrantError(GNTST_bad_domain, f"no domain {domid}")
        if not data:
            return
        rc, buf = self._claim(t, True, ref, 0, readonly=False)
        if rc:
            raise GrantError(rc, f"d{domid} ref {ref}")
        try:
            t.ram.write((buf.mfn << 12) + offset, bytes(data))
        finally:
            buf.release()
