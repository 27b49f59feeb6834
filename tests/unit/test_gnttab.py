"""Grant tables v1 (qemu_xenpv.gnttab and the grant_table_op family) between
fake domains whose grant frames and data frames live in real GuestRAM:
domain 0's maps, copies in both directions, every GNTST answer, the in-use
flags the granting guest sees, table management, and the hypercall."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qemu_xenpv import abi
from qemu_xenpv.gnttab import (GNTST_bad_copy_arg, GNTST_bad_domain, GNTST_bad_gntref,
                               GNTST_bad_handle, GNTST_bad_page, GNTST_eagain,
                               GNTST_general_error, GNTST_no_space, GNTST_okay,
                               GNTST_permission_denied, PIN_MAX, GrantEngine, GrantError,
                               GrantTable)
from qemu_xenpv.hypercall import Call, _load_families, dispatch

GT_MFN = 1                   # the grant-table frame of every fake domain
SPARE = [2, 3, 4]            # frames it may grow into
DATA = range(0x10, 0x20)     # frames the domain owns
PT_MFN = 0x1F                # one of them is a page table: never writable through a grant
RO, RW = abi.GTF_readonly, 0
PERMIT = abi.GTF_permit_access


class Dom:
    """A granting domain: RAM, ownership, writable-type references."""

    def __init__(self, domid, ram, max_frames=4):
        self.domid = domid
        self.ram = ram
        self.writable_refs = {}
        self.gnttab = GrantTable(domid, ram, [GT_MFN], max_frames=max_frames, spare=SPARE,
                                 owns=lambda mfn: mfn in DATA or mfn == GT_MFN,
                                 get_writable=self._get_w, put_writable=self._put_w)

    def _get_w(self, mfn):
        if mfn == PT_MFN:
            return False
        self.writable_refs[mfn] = self.writable_refs.get(mfn, 0) + 1
        return True

    def _put_w(self, mfn):
        self.writable_refs[mfn] -= 1
        if not self.writable_refs[mfn]:
            del self.writable_refs[mfn]

    def grant(self, ref, to, mfn, flags=RW):
        self.gnttab.write_entry(ref, PERMIT | flags, to, mfn)

    def flags(self, ref):
        return self.gnttab.entry(ref)[0]

    def fill(self, mfn, data, off=0):
        self.ram.write((mfn << 12) + off, data)

    def page(self, mfn, off=0, n=16):
        return self.ram.read((mfn << 12) + off, n)


@pytest.fixture
def world(make_ram):
    doms = {}
    dom0_table = GrantTable(0)
    eng = GrantEngine(lambda d: dom0_table if d == 0 else
                      (doms[d].gnttab if d in doms else None), max_maptrack=16)
    for d in (1, 2):
        doms[d] = Dom(d, make_ram(2 << 20))
    return SimpleNamespace(eng=eng, d1=doms[1], d2=doms[2], doms=doms)


# ---- ABI ------------------------------------------------------------------------
@pytest.mark.parametrize("layout,size,offsets", [
    (abi.gnttab_setup_table, 16, {"dom": 0, "nr_frames": 4, "status": 8, "frame_list": 12}),
    (abi.gnttab_query_size, 16, {"dom": 0, "nr_frames": 4, "max_nr_frames": 8, "status": 12}),
    (abi.gnttab_map_grant_ref, 32, {"host_addr": 0, "flags": 8, "ref": 12, "dom": 16,
                                    "status": 18, "handle": 20, "dev_bus_addr": 24}),
    (abi.gnttab_unmap_grant_ref, 24, {"host_addr": 0, "dev_bus_addr": 8, "handle": 16,
                                      "status": 20}),
    (abi.gnttab_copy, 24, {"source_u": 0, "source_domid": 4, "source_offset": 6, "dest_u": 8,
                           "dest_domid": 12, "dest_offset": 14, "len": 16, "flags": 18,
                           "status": 20}),
    (abi.gnttab_set_version, 4, {"version": 0}),
    (abi.gnttab_get_version, 8, {"dom": 0, "version": 4}),
    (abi.gnttab_transfer, 16, {"mfn": 0, "domid": 4, "ref": 8, "status": 12}),
    (abi.gnttab_get_status_frames, 12, {"nr_frames": 0, "dom": 4, "status": 6,
                                        "frame_list": 8}),
    (abi.gnttab_swap_grant_ref, 12, {"ref_a": 0, "ref_b": 4, "status": 8}),
])
def test_layouts(layout, size, offsets):
    assert layout.size == size
    for name, off in offsets.items():
        assert layout.offsets[name] == off, name


def test_constants():
    assert abi.GNTST[-13] == "no_space" and abi.GNTST[-8] == "permission_denied"
    assert (abi.GNTMAP_device_map, abi.GNTMAP_host_map, abi.GNTMAP_readonly) == (1, 2, 4)
    assert (abi.GNTCOPY_source_gref, abi.GNTCOPY_dest_gref) == (1, 2)
    assert abi.GTF_sub_page == 256


# ---- domain 0 maps ------------------------------------------------------------------
def test_map_rw_sets_in_use_bits_and_shares_the_frame(world):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10)
    d1.fill(0x10, b"from the guest")
    m = eng.map_grant_ref(1, 8)
    assert (m.mfn, m.dev_bus_addr, m.readonly) == (0x10, 0x10000, False)
    assert d1.flags(8) == PERMIT | abi.GTF_reading | abi.GTF_writing
    assert m.read(0, 14) == b"from the guest"
    m.write(0, b"FROM DOMAIN 0")
    assert d1.page(0x10, 0, 13) == b"FROM DOMAIN 0"
    assert d1.writable_refs == {0x10: 1}
    eng.unmap_grant_ref(m.handle)
    assert d1.flags(8) == PERMIT
    assert d1.writable_refs == {}
    assert not d1.gnttab.in_use(8)


def test_map_readonly(world):
    d1, eng = world.d1, world.eng
    d1.grant(9, 0, 0x11, RO)
    m = eng.map_grant_ref(1, 9, readonly=True)
    assert d1.flags(9) == PERMIT | RO | abi.GTF_reading
    assert m.view.readonly
    with pytest.raises(GrantError) as e:
        m.write(0, b"x")
    assert e.value.status == GNTST_permission_denied
    eng.unmap_grant_ref(m)
    assert d1.flags(9) == PERMIT | RO


@pytest.mark.parametrize("setup,call,status", [
    (lambda d: d.grant(8, 0, 0x10), dict(domid=1, ref=8, flags=0), GNTST_bad_gntref),
    (lambda d: d.grant(8, 0, 0x10), dict(domid=7, ref=8), GNTST_bad_domain),
    (lambda d: None, dict(domid=1, ref=512), GNTST_bad_gntref),
    (lambda d: d.gnttab.write_entry(8, abi.GTF_invalid, 0, 0x10), dict(domid=1, ref=8),
     GNTST_general_error),
    (lambda d: d.gnttab.write_entry(8, abi.GTF_accept_transfer, 0, 0x10), dict(domid=1, ref=8),
     GNTST_general_error),
    (lambda d: d.grant(8, 5, 0x10), dict(domid=1, ref=8), GNTST_general_error),
    (lambda d: d.grant(8, 0, 0x10, RO), dict(domid=1, ref=8), GNTST_general_error),
    (lambda d: d.grant(8, 0, 0x10 | abi.GTF_sub_page * 0), dict(domid=1, ref=8), GNTST_okay),
    (lambda d: d.gnttab.write_entry(8, PERMIT | abi.GTF_sub_page, 0, 0x10),
     dict(domid=1, ref=8), GNTST_general_error),
    (lambda d: d.grant(8, 0, 0x900), dict(domid=1, ref=8), GNTST_bad_page),
    (lambda d: d.grant(8, 0, PT_MFN), dict(domid=1, ref=8), GNTST_general_error),
])
def test_map_errors_leave_the_entry_untouched(world, setup, call, status):
    d1, eng = world.d1, world.eng
    setup(d1)
    before = d1.gnttab.entry(8)
    kw = dict(call)
    domid, ref = kw.pop("domid"), kw.pop("ref")
    if status == GNTST_okay:
        eng.unmap_grant_ref(eng.map_grant_ref(domid, ref, **kw))
    else:
        with pytest.raises(GrantError) as e:
            eng.map_grant_ref(domid, ref, **kw)
        assert e.value.status == status
    assert d1.gnttab.entry(8) == before
    assert not d1.gnttab.in_use(8) and not eng.maptrack and d1.writable_refs == {}


def test_pins_count_and_the_last_unmap_clears(world):
    d1, eng = world.d1, world.eng
    d1.grant(10, 0, 0x12)
    r1 = eng.map_grant_ref(1, 10, readonly=True)
    w1 = eng.map_grant_ref(1, 10)                  # upgrade: GTF_writing joins
    r2 = eng.map_grant_ref(1, 10, readonly=True)
    assert d1.flags(10) & (abi.GTF_reading | abi.GTF_writing) == abi.GTF_reading | abi.GTF_writing
    eng.unmap_grant_ref(w1)
    assert d1.flags(10) == PERMIT | abi.GTF_reading     # readers remain
    eng.unmap_grant_ref(r1)
    assert d1.flags(10) == PERMIT | abi.GTF_reading
    eng.unmap_grant_ref(r2)
    assert d1.flags(10) == PERMIT


def test_pinned_entry_keeps_its_frame_while_the_guest_changes_it(world):
    d1, eng = world.d1, world.eng
    d1.grant(10, 0, 0x12)
    m = eng.map_grant_ref(1, 10, readonly=True)
    d1.grant(10, 0, 0x13)                           # a misbehaving granter
    m2 = eng.map_grant_ref(1, 10, readonly=True)
    assert m2.mfn == 0x12
    eng.unmap_grant_ref(m)
    eng.unmap_grant_ref(m2)


def test_revoking_guest_sees_the_entry_busy(world):
    """gnttab_end_foreign_access: cmpxchg flags -> 0 fails while in use."""
    d1, eng = world.d1, world.eng
    d1.grant(11, 0, 0x13)
    m = eng.map_grant_ref(1, 11)
    pa = d1.gnttab.entry_addr(11)
    combo = d1.ram.r32(pa)
    assert d1.ram.cmpxchg32(pa, (combo & 0xFFFF0000) | PERMIT, 0) != (combo & 0xFFFF0000) | PERMIT
    eng.unmap_grant_ref(m)
    combo = d1.ram.r32(pa)
    assert d1.ram.cmpxchg32(pa, combo, 0) == combo and d1.ram.r32(pa) == 0


def test_unstable_entry_gives_up(world, monkeypatch):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10)
    calls = []
    real = d1.ram.cmpxchg32

    def racing(addr, old, new):
        calls.append(1)
        return old ^ abi.GTF_PWT if len(calls) < 100 else real(addr, old, new)
    monkeypatch.setattr(d1.ram, "cmpxchg32", racing)
    with pytest.raises(GrantError) as e:
        eng.map_grant_ref(1, 8)
    assert e.value.status == GNTST_general_error and len(calls) == 5


def test_unmap_bad_handles(world):
    d1, eng = world.d1, world.eng
    with pytest.raises(GrantError) as e:
        eng.unmap_grant_ref(3)
    assert e.value.status == GNTST_bad_handle
    d1.grant(8, 0, 0x10)
    m = eng.map_grant_ref(1, 8)
    eng.unmap_grant_ref(m)
    with pytest.raises(GrantError) as e:
        eng.unmap_grant_ref(m)
    assert e.value.status == GNTST_bad_handle
    with pytest.raises(GrantError):
        m.read()


def test_maptrack_exhaustion(world):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10, RO)
    maps = [eng.map_grant_ref(1, 8, readonly=True) for _ in range(16)]
    assert len({m.handle for m in maps}) == 16
    with pytest.raises(GrantError) as e:
        eng.map_grant_ref(1, 8, readonly=True)
    assert e.value.status == GNTST_no_space
    for m in maps:
        eng.unmap_grant_ref(m)
    assert d1.flags(8) == PERMIT | RO


def test_pin_counter_overflow(world):
    d1 = world.d1
    d1.grant(8, 0, 0x10, RO)
    t = d1.gnttab
    for _ in range(PIN_MAX):
        assert t.pin(8, 0, ["host_r"], True, True)[0] == GNTST_okay
    assert t.pin(8, 0, ["host_r"], True, True)[0] == GNTST_general_error


def test_device_map_counts_separately(world):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10)
    m = eng.map_grant_ref(1, 8, flags=abi.GNTMAP_device_map | abi.GNTMAP_host_map)
    a = d1.gnttab.active[8]
    assert (a.dev_w, a.host_w) == (1, 1)
    eng.unmap_grant_ref(m)
    assert 8 not in d1.gnttab.active


def test_granter_destroyed_revokes_domain0_views(world):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10)
    m = eng.map_grant_ref(1, 8)
    eng.domain_destroyed(1)
    assert m.revoked
    d1.ram.close()                              # no exported view holds the RAM
    eng.unmap_grant_ref(m)                      # still accepted, frees the handle
    assert not eng.maptrack
    with pytest.raises(GrantError) as e:
        eng.map_grant_ref(1, 8)
    assert e.value.status == GNTST_bad_gntref


# ---- copies -----------------------------------------------------------------------
def _op(src, sdom, soff, dst, ddom, doff, n, flags):
    return {"source_u": src, "source_domid": sdom, "source_offset": soff, "dest_u": dst,
            "dest_domid": ddom, "dest_offset": doff, "len": n, "flags": flags, "status": 0}


SELF = abi.DOMID_SELF
SG, DG = abi.GNTCOPY_source_gref, abi.GNTCOPY_dest_gref


def test_copy_guest_to_guest_both_directions(world):
    d1, d2, eng = world.d1, world.d2, world.eng
    d1.grant(8, 2, 0x10)                # d1 grants its frame 0x10 to d2
    d1.fill(0x10, b"d1 says hello", 100)
    # d2 pulls it into its own frame 0x14 ...
    assert eng.copy(_op(8, 1, 100, 0x14, SELF, 7, 13, SG), 2) == GNTST_okay
    assert d2.page(0x14, 7, 13) == b"d1 says hello"
    # ... and pushes an answer back into d1's granted frame
    d2.fill(0x15, b"d2 answers")
    assert eng.copy(_op(0x15, SELF, 0, 8, 1, 200, 10, DG), 2) == GNTST_okay
    assert d1.page(0x10, 200, 10) == b"d2 answers"
    assert d1.flags(8) == PERMIT and not d1.gnttab.in_use(8)
    assert d1.writable_refs == {} and d2.writable_refs == {}


def test_copy_gref_to_gref(world):
    d1, d2, eng = world.d1, world.d2, world.eng
    d1.grant(8, 2, 0x10, RO)
    d1.grant(9, 2, 0x11)
    d1.fill(0x10, b"abc")
    assert eng.copy(_op(8, 1, 0, 9, 1, 1, 3, SG | DG), 2) == GNTST_okay
    assert d1.page(0x11, 0, 4) == b"\0abc"


@pytest.mark.parametrize("op,status", [
    (_op(8, 1, 0, 0x14, 2, 0, 8, SG), GNTST_permission_denied),       # frame by domid
    (_op(0x10, 1, 0, 0x14, SELF, 0, 8, 0), GNTST_permission_denied),
    (_op(8, 9, 0, 0x14, SELF, 0, 8, SG), GNTST_bad_domain),
    (_op(600, 1, 0, 0x14, SELF, 0, 8, SG), GNTST_bad_gntref),
    (_op(8, 1, 4090, 0x14, SELF, 0, 8, SG), GNTST_bad_copy_arg),
    (_op(8, 1, 0, 0x14, SELF, 4095, 2, SG), GNTST_bad_copy_arg),
    (_op(8, 1, 0, 0x900, SELF, 0, 8, SG), GNTST_bad_page),            # not d2's frame
    (_op(8, 1, 0, PT_MFN, SELF, 0, 8, SG), GNTST_general_error),      # a page table
    (_op(0x14, SELF, 0, 9, 1, 0, 8, DG), GNTST_general_error),        # ref 9 is read-only
    (_op(10, 1, 0, 0x14, SELF, 0, 8, SG), GNTST_general_error),       # granted to d3
    (_op(8, 1, 0, 0x14, SELF, 0, 0, SG | 0x100), GNTST_okay),         # len 0: nothing
])
def test_copy_errors(world, op, status):
    d1, d2, eng = world.d1, world.d2, world.eng
    d1.grant(8, 2, 0x10)
    d1.grant(9, 2, 0x11, RO)
    d1.grant(10, 3, 0x12)
    d2.fill(0x14, b"untouched")
    assert eng.copy(op, 2) == status
    if status:
        assert d2.page(0x14, 0, 9) == b"untouched"
    for ref in (8, 9, 10):
        assert not d1.flags(ref) & (abi.GTF_reading | abi.GTF_writing)
        assert not d1.gnttab.in_use(ref)
    assert d1.writable_refs == {} and d2.writable_refs == {}


def test_copy_refused_while_another_domain_holds_the_pin(world):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10)
    m = eng.map_grant_ref(1, 8)                 # pinned by domain 0
    d1.grant(8, 2, 0x10)                        # the guest re-targets it meanwhile
    assert eng.copy(_op(8, 1, 0, 0x14, SELF, 0, 4, SG), 2) == GNTST_general_error
    eng.unmap_grant_ref(m)


def test_domain0_copy_helpers(world):
    d1, eng = world.d1, world.eng
    d1.grant(8, 0, 0x10)
    d1.fill(0x10, b"grant copy to dom0", 10)
    assert eng.copy_from_grant(1, 8, 10, 18) == b"grant copy to dom0"
    eng.copy_to_grant(1, 8, 4000, b"reply")
    assert d1.page(0x10, 4000, 5) == b"reply"
    assert d1.flags(8) == PERMIT
    d1.grant(9, 0, 0x11, RO)
    with pytest.raises(GrantError) as e:
        eng.copy_to_grant(1, 9, 0, b"x")
    assert e.value.status == GNTST_general_error
    with pytest.raises(GrantError) as e:
        eng.copy_from_grant(1, 8, 4000, 200)
    assert e.value.status == GNTST_bad_copy_arg
    with pytest.raises(GrantError) as e:
        eng.copy_from_grant(5, 8)
    assert e.value.status == GNTST_bad_domain
    # domain 0 has nothing to copy from by frame
    assert eng.copy(_op(0x10, SELF, 0, 8, 1, 0, 4, DG), 0) == GNTST_bad_page


# ---- table management ------------------------------------------------------------------
def test_setup_grows_into_spare_frames_up_to_the_maximum(world):
    t = world.d1.gnttab
    world.d1.fill(2, b"stale")
    assert t.setup(1) == (GNTST_okay, [GT_MFN])
    assert t.setup(3) == (GNTST_okay, [GT_MFN, 2, 3])
    assert world.d1.page(2, 0, 5) == b"\0" * 5          # new frames are zeroed
    assert t.nr_entries == 3 * 512
    assert t.setup(5)[0] == GNTST_general_error           # max_frames is 4
    assert t.setup(2) == (GNTST_okay, [GT_MFN, 2])        # never shrinks
    assert t.nr_entries == 3 * 512


def test_versions(world):
    t = world.d1.gnttab
    assert t.set_version(1) == 0
    assert t.set_version(2) == -abi.ENOSYS
    assert t.set_version(0) == -abi.EINVAL and t.set_version(3) == -abi.EINVAL
    assert t.version == 1


def test_swap(world):
    d1, eng = world.d1, world.eng
    t = d1.gnttab
    d1.grant(8, 0, 0x10)
    d1.grant(9, 0, 0x11, RO)
    assert t.swap(8, 9) == GNTST_okay
    assert t.entry(8)[2] == 0x11 and t.entry(9)[2] == 0x10
    assert t.swap(8, 8) == GNTST_okay
    assert t.swap(8, 512) == GNTST_bad_gntref
    m = eng.map_grant_ref(1, 9)
    assert t.swap(8, 9) == GNTST_eagain
    eng.unmap_grant_ref(m)


# ---- the hypercall -------------------------------------------------------------------
MEM = 0x20000


class GuestDom:
    """A guest issuing grant_table_op: flat memory at MEM for its arguments."""

    def __init__(self, hv, d):
        self.hv, self.domid, self.name = hv, d.domid, f"d{d.domid}"
        self.gnttab = d.gnttab
        self.mem = bytearray(0x4000)
        self.tracer = None
        self._logged = []
        self.vcpus = []

    def log_once(self, key, msg):
        self._logged.append(msg)

    def copy_from_guest(self, vcpu, va, n):
        if va < MEM or va + n > MEM + len(self.mem):
            return None
        return bytes(self.mem[va - MEM:va - MEM + n])

    def copy_to_guest(self, vcpu, va, data):
        if va < MEM or va + len(data) > MEM + len(self.mem):
            return False
        self.mem[va - MEM:va - MEM + len(data)] = data
        return True

    def put(self, layout, va, **vals):
        self.mem[va - MEM:va - MEM + layout.size] = layout.pack(vals)

    def get(self, layout, va):
        return layout.unpack(bytes(self.mem[va - MEM:va - MEM + layout.size]))


@pytest.fixture
def guest(world):
    _load_families()
    hv = SimpleNamespace(grants=world.eng,
                         domain_by_id=lambda d: world.doms.get(d) or (object() if d == 0 else None))
    g = GuestDom(hv, world.d2)
    vcpu = SimpleNamespace(dom=g, vid=0)

    def op(cmd, uop=MEM, count=1):
        call = Call(vcpu, args=(cmd, uop, count, 0, 0, 0, 20))
        return dispatch(call)
    g.op = op
    return g


def test_hypercall_setup_and_query(guest):
    guest.put(abi.gnttab_setup_table, MEM, dom=SELF, nr_frames=2, frame_list=MEM + 0x100)
    assert guest.op(2) == 0
    assert guest.get(abi.gnttab_setup_table, MEM)["status"] == GNTST_okay
    assert guest.get(abi.gnttab_setup_table, MEM + 0x100)["dom"] == GT_MFN
    assert int.from_bytes(guest.mem[0x104:0x108], "little") == 2
    guest.put(abi.gnttab_setup_table, MEM, dom=1, nr_frames=1, frame_list=MEM + 0x100)
    assert guest.op(2) == 0
    assert guest.get(abi.gnttab_setup_table, MEM)["status"] == GNTST_permission_denied
    guest.put(abi.gnttab_setup_table, MEM, dom=77, nr_frames=1, frame_list=MEM + 0x100)
    guest.op(2)
    assert guest.get(abi.gnttab_setup_table, MEM)["status"] == GNTST_bad_domain
    guest.put(abi.gnttab_setup_table, MEM, dom=SELF, nr_frames=9, frame_list=MEM + 0x100)
    guest.op(2)
    assert guest.get(abi.gnttab_setup_table, MEM)["status"] == GNTST_general_error
    assert guest.op(2, count=2) == -abi.EINVAL
    guest.put(abi.gnttab_query_size, MEM, dom=SELF)
    assert guest.op(6) == 0
    q = guest.get(abi.gnttab_query_size, MEM)
    assert (q["nr_frames"], q["max_nr_frames"], q["status"]) == (2, 4, GNTST_okay)


def test_hypercall_versions_and_refusals(guest):
    guest.put(abi.gnttab_set_version, MEM, version=1)
    assert guest.op(8) == 0
    guest.put(abi.gnttab_set_version, MEM, version=2)
    assert guest.op(8) == -abi.ENOSYS
    guest.put(abi.gnttab_get_version, MEM, dom=SELF)
    assert guest.op(10) == 0 and guest.get(abi.gnttab_get_version, MEM)["version"] == 1
    assert guest.op(4) == -abi.EOPNOTSUPP                 # transfer
    assert guest.op(3) == -abi.ENOSYS                     # dump_table
    assert guest.op(12) == -abi.ENOSYS                    # cache_flush
    assert guest.op(99) == -abi.ENOSYS
    assert guest.op(2 | (1 << 12)) == -abi.EINVAL         # continuation bits on a non-flush op
    assert guest.op(5, count=0x80000000) == -abi.EINVAL
    guest.put(abi.gnttab_get_status_frames, MEM, nr_frames=1, dom=SELF)
    assert guest.op(9) == 0
    assert guest.get(abi.gnttab_get_status_frames, MEM)["status"] == GNTST_general_error


def test_hypercall_map_and_unmap_answers(guest, world):
    world.d1.grant(8, 2, 0x10)
    L = abi.gnttab_map_grant_ref
    guest.put(L, MEM, flags=abi.GNTMAP_host_map, ref=8, dom=1)
    guest.put(L, MEM + 32, flags=0, ref=8, dom=1)
    guest.put(L, MEM + 64, flags=abi.GNTMAP_host_map, ref=8, dom=66)
    assert guest.op(0, count=3) == 0
    assert [guest.get(L, MEM + 32 * i)["status"] for i in range(3)] == \
        [GNTST_permission_denied, GNTST_bad_gntref, GNTST_bad_domain]
    assert not world.d1.gnttab.in_use(8)
    U = abi.gnttab_unmap_grant_ref
    guest.put(U, MEM, handle=0)
    assert guest.op(1) == 0 and guest.get(U, MEM)["status"] == GNTST_bad_handle


def test_hypercall_copy_batch(guest, world):
    d1, d2 = world.d1, world.d2
    d1.grant(8, 2, 0x10)
    d1.fill(0x10, b"batch")
    L = abi.gnttab_copy
    guest.put(L, MEM, **_op(8, 1, 0, 0x14, SELF, 0, 5, SG))
    guest.put(L, MEM + 24, **_op(8, 1, 0, 0x14, 2, 0, 5, SG))
    guest.put(L, MEM + 48, **_op(0x14, SELF, 0, 8, 1, 10, 5, DG))
    assert guest.op(5, count=3) == 0
    assert [guest.get(L, MEM + 24 * i)["status"] for i in range(3)] == \
        [GNTST_okay, GNTST_permission_denied, GNTST_okay]
    assert d2.page(0x14, 0, 5) == b"batch" and d1.page(0x10, 10, 5) == b"batch"
    assert guest.op(5, uop=MEM + 0x3FF0, count=1) == -abi.EFAULT


def test_hypercall_copy_batch_preempted(guest, world, monkeypatch):
    """With every preemption check due, a copy batch runs one op per round
    and continues with (cmd, the rest of the array, what is left), as
    do_grant_table_op()'s continuation does; every op runs exactly once."""
    from qemu_xenpv import hypercall as hc
    monkeypatch.setattr(hc, "PREEMPT_NS", -1)
    d1, d2 = world.d1, world.d2
    d1.grant(8, 2, 0x10)
    d1.fill(0x10, b"0123456789")
    L = abi.gnttab_copy
    for i in range(3):
        guest.put(L, MEM + 24 * i, **_op(8, 1, 3 * i, 0x14, SELF, 3 * i, 3, SG))
    vcpu = SimpleNamespace(dom=guest, vid=0)
    args, rounds = (5, MEM, 3), 0
    while True:
        c = Call(vcpu, args=args + (0, 0, 0, 20))
        assert dispatch(c) == 0
        rounds += 1
        if c.again is None:
            break
        args = c.again[:3]
        assert args[0] == 5 and args[1] == MEM + 24 * rounds and args[2] == 3 - rounds
    assert rounds == 3
    assert [guest.get(L, MEM + 24 * i)["status"] for i in range(3)] == [GNTST_okay] * 3
    assert d2.page(0x14, 0, 9) == b"012345678"


def test_hypercall_swap(guest, world):
    d2 = world.d2
    d2.grant(8, 1, 0x10)
    L = abi.gnttab_swap_grant_ref
    guest.put(L, MEM, ref_a=8, ref_b=9)
    assert guest.op(11) == 0 and guest.get(L, MEM)["status"] == GNTST_okay
    assert d2.gnttab.entry(9)[2] == 0x10
