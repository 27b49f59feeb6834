"""PV drivers for HVM guests, without QEMU: the guest page walk and the
HVM hypercall families on a fake domain."""

import struct

import pytest

from qemu_xenpv import abi
from qemu_xenpv.hvm import layout, pv


class RAM:
    def __init__(self, mb=16):
        self.size = mb << 20
        self.mem = bytearray(self.size)

    def read(self, a, n):
        return bytes(self.mem[a:a + n])

    def write(self, a, d):
        self.mem[a:a + len(d)] = d

    def r8(self, a):
        return self.mem[a]

    def r32(self, a):
        return struct.unpack_from("<I", self.mem, a)[0]

    def r64(self, a):
        return struct.unpack_from("<Q", self.mem, a)[0]

    def w32(self, a, v):
        struct.pack_into("<I", self.mem, a, v)

    def w64(self, a, v):
        struct.pack_into("<Q", self.mem, a, v)

    def zero(self, a, n):
        self.mem[a:a + n] = bytes(n)

    def xchg8(self, a, v):
        old, self.mem[a] = self.mem[a], v
        return old


PG, WP, PSE, PAE = 0x80000000, 0x10000, 0x10, 0x20


def test_paging_off_is_identity():
    assert pv.translate(RAM(), 0x11, 0, 0, 0x12345, False) == 0x12345


def test_two_level_4k_and_pse():
    ram = RAM()
    pd, pt = 0x10000, 0x11000
    ram.w32(pd + (0xC0000000 >> 22) * 4, pt | 0x3)
    ram.w32(pt + 5 * 4, 0x00345000 | 0x1)               # read-only 4K page
    ram.w32(pd + 1 * 4, 0x00800000 | 0x83)              # 4 MiB page at VA 4M
    va = 0xC0005123
    assert pv.translate(ram, PG, pd, 0, va, False) == 0x00345123
    assert pv.translate(ram, PG, pd, 0, va, True) == 0x00345123        # WP off
    assert pv.translate(ram, PG | WP, pd, 0, va, True) is None           # WP on: read-only
    assert pv.translate(ram, PG, pd, PSE, 0x00412345, False) == 0x00812345
    assert pv.translate(ram, PG, pd, 0, 0x00412345, False) is None      # PS without CR4.PSE
    assert pv.translate(ram, PG, pd, 0, 0x80000000, False) is None      # not present


def test_pae_4k_and_2m():
    ram = RAM()
    pdpt, pd, pt = 0x20020, 0x21000, 0x22000              # PDPT 32-byte aligned
    ram.w64(pdpt + 3 * 8, pd | 1)
    ram.w64(pd + 2 * 8, pt | 3)
    ram.w64(pt + 7 * 8, 0x00abc000 | 3)
    ram.w64(pd + 3 * 8, 0x00600000 | 0x83)
    base = 0xC0000000
    assert pv.translate(ram, PG, pdpt, PAE, base + (2 << 21) + (7 << 12) + 0x10, True) == 0xabc010
    assert pv.translate(ram, PG, pdpt, PAE, base + (3 << 21) + 0x1234, False) == 0x601234
    assert pv.translate(ram, PG, pdpt, PAE, 0x1000, False) is None
    # page tables pointing outside RAM: refused, not an exception
    ram.w64(pd + 4 * 8, 0x7FFFF000 | 3)
    assert pv.translate(ram, PG, pdpt, PAE, base + (4 << 21), False) is None


class FakeHV:
    def __init__(self):
        self.soon = []
        self.lines = []

    def call_soon(self, fn, *a):
        self.soon.append((fn, a))

    def dmesg(self, line):
        self.lines.append(line)


class FakeDom:
    domid = 3
    name = "t"
    tracer = None

    def __init__(self):
        self.ram = RAM(16)
        self.hv = FakeHV()
        self.shared_info_pa = layout.pv_area(self.ram.size) + layout.PV_SHARED_INFO_PAGE * 4096
        self.logged = []
        self.published = 0

    def log(self, m):
        self.logged.append(m)

    def log_once(self, k, m):
        self.logged.append(m)

    def copy_from_guest(self, vcpu, va, n):
        return self.pvd.copy(vcpu, va, n)

    def copy_to_guest(self, vcpu, va, data):
        return bool(self.pvd.copy(vcpu, va, len(data), data))

    def publish_wallclock(self):
        self.published += 1

    def pv_shutdown(self, r):
        pass

    def crash_from_hypercall(self, reason):
        raise AssertionError(reason)


@pytest.fixture
def env():
    dom = FakeDom()
    p = pv.PVDrivers.__new__(pv.PVDrivers)
    p.dom, p.hv, p.ram = dom, dom.hv, dom.ram
    p.area = layout.pv_area(dom.ram.size)
    p.params = {pv.HVM_PARAM_STORE_PFN: 0x123, pv.HVM_PARAM_PAE_ENABLED: 1}
    p.calls = 0
    p.placed = {}
    dom.pvd = p
    p.setup_grant_table()
    v = pv.HVMVcpu(p, 0)
    dom.vcpus = [v]
    v.cr0 = 0x11                                     # paging off: VA = PA
    return p, dom, v


def param_op(p, v, op, index, value=0, domid=abi.DOMID_SELF, at=0x5000):
    p.ram.write(at, struct.pack("<HHIQ", domid, 0, index, value))
    rc = p.dispatch(v, abi.HYPERCALL_NR["hvm_op"], (op, at, 0, 0, 0, 0))
    return rc, struct.unpack_from("<Q", p.ram.mem, at + 8)[0]


def test_hvm_params(env):
    p, dom, v = env
    assert param_op(p, v, pv.HVMOP_get_param, pv.HVM_PARAM_STORE_PFN) == (0, 0x123)
    assert param_op(p, v, pv.HVMOP_get_param, 99)[0] == -abi.EINVAL
    assert param_op(p, v, pv.HVMOP_get_param, 1, domid=7)[0] == -abi.EPERM
    assert param_op(p, v, pv.HVMOP_set_param, pv.HVM_PARAM_STORE_PFN, 5)[0] == -abi.EPERM
    assert param_op(p, v, pv.HVMOP_set_param, 0, 1 << 56 | 0x10)[0] == -abi.ENOSYS   # PCI INTx
    assert param_op(p, v, pv.HVMOP_set_param, 0, 2 << 56 | 0x10)[0] == -abi.EINVAL   # exception
    assert param_op(p, v, pv.HVMOP_set_param, 0, 5)[0] == -abi.EINVAL            # GSI 5
    p.com2_ours = None
    dom.ram.mem[dom.shared_info_pa] = 0                                            # nothing pending
    assert param_op(p, v, pv.HVMOP_set_param, 0, 3)[0] == 0
    assert p.params[0] == 3


def test_add_to_physmap_shared_info(env):
    p, dom, v = env
    dom.ram.write(dom.shared_info_pa + 2048, b"\xAA" * 4)
    p.ram.write(0x6000, struct.pack("<HHIII", abi.DOMID_SELF, 0, 0, 0, 0x200))
    assert p.dispatch(v, abi.HYPERCALL_NR["memory_op"], (7, 0x6000, 0, 0, 0, 0)) == 0
    assert dom.shared_info_pa == 0x200000 and dom.published == 1
    assert dom.ram.read(0x200000 + 2048, 4) == b"\xAA" * 4
    assert v.vcpu_info_pa == 0x200000
    for gpfn in (0x9F, 0xA0, p.area >> 12, 0xFFFFF):              # not the guest's RAM
        p.ram.write(0x6000, struct.pack("<HHIII", abi.DOMID_SELF, 0, 0, 0, gpfn))
        assert p.dispatch(v, abi.HYPERCALL_NR["memory_op"], (7, 0x6000, 0, 0, 0, 0)) == -abi.EINVAL


def add_to_physmap(p, v, space, idx, gpfn, at=0x6000):
    p.ram.write(at, struct.pack("<HHIII", abi.DOMID_SELF, 0, space, idx, gpfn))
    return p.dispatch(v, abi.HYPERCALL_NR["memory_op"], (pv.XENMEM_add_to_physmap, at, 0, 0, 0, 0))


def gnttab_op(p, v, cmd, at, count=1):
    return p.dispatch(v, abi.HYPERCALL_NR["grant_table_op"], (cmd, at, count, 0, 0, 0))


def test_grant_table_frames_are_placed_where_the_guest_asks(env):
    p, dom, v = env
    t = dom.gnttab
    home0 = (p.area >> 12) + layout.PV_GRANT_PAGE
    assert t.frames == [home0] and t.max_frames == layout.PV_GRANT_FRAMES   # INITIAL_NR = 1
    # query_size: 1 of 4 frames
    p.ram.write(0x7000, struct.pack("<HHIIhH", abi.DOMID_SELF, 0, 0, 0, 99, 0))
    assert gnttab_op(p, v, 6, 0x7000) == 0
    assert struct.unpack_from("<IIh", p.ram.mem, 0x7004) == (1, layout.PV_GRANT_FRAMES, 0)
    # frame 0 at gpfn 0x300: its entries go with it
    t.write_entry(9, abi.GTF_permit_access, 0, 0x400)
    assert add_to_physmap(p, v, pv.XENMAPSPACE_grant_table, 0, 0x300) == 0
    assert t.frames[0] == 0x300 and t.entry(9) == (abi.GTF_permit_access, 0, 0x400)
    # setup_table answers the frame's gpfn
    p.ram.write(0x7000, struct.pack("<HHIhHI", abi.DOMID_SELF, 0, 1, 0, 0, 0x7100))
    assert gnttab_op(p, v, 2, 0x7000) == 0
    assert struct.unpack_from("<h", p.ram.mem, 0x7008)[0] == 0
    assert p.ram.r32(0x7100) == 0x300
    # frame 2 grows the table to 3 frames (frame 1 stays at home, zeroed)
    assert add_to_physmap(p, v, pv.XENMAPSPACE_grant_table, 2, 0x302) == 0
    assert t.frames == [0x300, home0 + 1, 0x302] and t.nr_entries == 3 * 512
    # beyond the maximum, and a v2 status frame: -EINVAL, nothing changes
    for idx in (layout.PV_GRANT_FRAMES, 0x80000000):
        assert add_to_physmap(p, v, pv.XENMAPSPACE_grant_table, idx, 0x310) == -abi.EINVAL
    assert len(t.frames) == 3
    # a page taken over by another special page goes back home, contents kept
    assert add_to_physmap(p, v, pv.XENMAPSPACE_shared_info, 0, 0x300) == 0
    assert dom.shared_info_pa == 0x300000 and t.frames[0] == home0
    assert t.entry(9) == (abi.GTF_permit_access, 0, 0x400)
    # gpfns that are not the guest's RAM
    for gpfn in (0x9F, 0xE0, p.area >> 12, (p.area >> 12) + layout.PV_GRANT_PAGE):
        assert add_to_physmap(p, v, pv.XENMAPSPACE_grant_table, 0, gpfn) == -abi.EINVAL
    # other spaces (gmfn, gmfn_range, foreign) are not offered
    assert add_to_physmap(p, v, 2, 0x200, 0x320) == -abi.EINVAL


def test_hvm_grant_table_ops_are_xens_hvm_subset(env):
    p, dom, v = env
    for cmd in (3, 4, 7, 9, 12, 13):        # dump_table, transfer, unmap_and_replace, ...
        assert gnttab_op(p, v, cmd, 0x7000) == -abi.ENOSYS, cmd
    p.ram.write(0x7000, struct.pack("<HHI", abi.DOMID_SELF, 0, 0))
    assert gnttab_op(p, v, 10, 0x7000) == 0                 # get_version: 1
    assert p.ram.r32(0x7004) == 1


def test_pointers_into_the_hypercall_area_fault(env):
    p, dom, v = env
    nr = abi.HYPERCALL_NR["hvm_op"]
    assert p.dispatch(v, nr, (pv.HVMOP_get_param, p.area + 8, 0, 0, 0, 0)) == -abi.EFAULT
    assert p.dispatch(v, nr, (pv.HVMOP_get_param, dom.ram.size - 4, 0, 0, 0, 0)) == -abi.EFAULT


def test_unknown_hypercalls_are_enosys(env):
    p, dom, v = env
    for nr in (abi.HYPERCALL_NR["mmu_update"], abi.HYPERCALL_NR["set_trap_table"], 200):
        assert p.dispatch(v, nr, (0, 0, 0, 0, 0, 0)) == -abi.ENOSYS


def test_shutdown_reason_checked(env):
    p, dom, v = env
    p.ram.write(0x7000, struct.pack("<I", 9))
    assert p.dispatch(v, abi.HYPERCALL_NR["sched_op"], (2, 0x7000, 0, 0, 0, 0)) == -abi.EINVAL
    p.ram.write(0x7000, struct.pack("<I", 0))
    assert p.dispatch(v, abi.HYPERCALL_NR["sched_op"], (2, 0x7000, 0, 0, 0, 0)) is pv.NO_ANSWER
    assert dom.hv.soon and dom.hv.soon[-1][1] == ("poweroff",)


class Kicks:
    def __init__(self):
        self.kicked = []

    def kick(self, n):
        self.kicked.append(n)


def test_vector_callback_raises_the_msix_entry_of_the_vector(env):
    p, dom, v = env
    p.cb_device, p.com2_ours = Kicks(), None
    vi = v.vcpu_info_pa
    dom.ram.mem[vi] = 0                                     # nothing pending yet
    assert param_op(p, v, pv.HVMOP_set_param, 0, 2 << 56 | 0xF3)[0] == 0
    assert p.cb_device.kicked == []
    dom.ram.mem[vi + 1] = 1                                 # the mask does not matter (HVM)
    v.mark_events_pending()
    assert p.cb_device.kicked == [0xF3 - layout.CB_VECTOR_BASE]
    v.mark_events_pending()                                 # still pending: no second edge
    assert p.cb_device.kicked == [0xF3 - layout.CB_VECTOR_BASE]
    assert param_op(p, v, pv.HVMOP_get_param, 0) == (0, 2 << 56 | 0xF3)


def test_back_ends_map_only_the_hvm_guests_ram(env):
    """Grant entries of an HVM guest name gpfns; domain 0 maps those in the
    guest's RAM and nothing else (not the PV area, not the holes)."""
    from qemu_xenpv.gnttab import GrantEngine, GrantError
    from qemu_xenpv.machine.ram import GuestRAM
    p, dom, v = env
    ram = GuestRAM(16 << 20, "test-hvm-gnttab")
    try:
        p.ram = dom.ram = ram
        p.setup_grant_table()
        t = dom.gnttab
        eng = GrantEngine(lambda d: t if d == dom.domid else None)
        ram.write(0x400000, b"granted page")
        bad = [0x9F, 0xA0, 0xF0, p.area >> 12, (p.area >> 12) + layout.PV_GRANT_PAGE, 0x10000]
        for ref, frame in enumerate([0x400] + bad, start=8):
            t.write_entry(ref, abi.GTF_permit_access, 0, frame)
        m = eng.map_grant_ref(dom.domid, 8)
        assert m.read(0, 12) == b"granted page"
        eng.unmap_grant_ref(m)
        for ref in range(9, 9 + len(bad)):
            with pytest.raises(GrantError):
                eng.map_grant_ref(dom.domid, ref)
        assert not eng.maptrack and all(not t.in_use(r) for r in range(8, 9 + len(bad)))
    finally:
        ram.close()
