"""Grant tables with booted guests: data between two guests by grant copy in
both directions, read-only grants and revocation; and domain 0 (Python, in
this process) mapping and copying a page a guest granted it."""

import asyncio
import re
import threading
import time

import pytest

from conftest import guest
from .demo_guest import PROMPT, boot, find, poweroff, run


def test_two_guests_exchange_data_by_grant_copy(xenpv):
    a, _, da = boot(xenpv, "a")
    b, _, db = boot(xenpv, "b")
    ref = int(find(r"gnt-share: ref (\d+)", run(a, f"gnt-share {db} a's page for b")))
    assert run(b, f"gnt-copy {da} {ref}") == "gnt-copy: 'a's page for b'"       # a -> b
    assert run(b, f"gnt-put {da} {ref} b was here") == "gnt-put: ok"          # b -> a
    assert run(a, f"gnt-show {ref}") == f"gnt-show: ref {ref} flags 0x1: b was here"
    # a read-only grant can be read, not written
    ro = int(find(r"gnt-share: ref (\d+)", run(a, f"gnt-share {db} ro read only")))
    assert run(b, f"gnt-copy {da} {ro}") == "gnt-copy: 'read only'"
    assert run(b, f"gnt-put {da} {ro} scribble") == "gnt-put: status -1"     # general_error
    assert run(a, f"gnt-show {ro}").endswith(": read only")
    # a grant for domain 0 is not b's; a bad reference is bad; a bad domain is bad
    mine = int(find(r"gnt-share: ref (\d+)", run(a, "gnt-share 0 for dom0 only")))
    assert run(b, f"gnt-copy {da} {mine}") == "gnt-copy: status -1"
    assert run(b, f"gnt-copy {da} 5000") == "gnt-copy: status -3"              # bad_gntref
    assert run(b, f"gnt-copy 4321 {ref}") == "gnt-copy: status -2"             # bad_domain
    # revoked: no more access
    assert run(a, f"gnt-end {ref}") == f"gnt-end: ref {ref} revoked"
    assert run(b, f"gnt-copy {da} {ref}") == "gnt-copy: status -1"
    assert poweroff(a) == 0 and poweroff(b) == 0


class InProcessGuest:
    """A demo guest booted by a Hypervisor in this process, so the test can
    use domain 0's grant API on it directly."""

    def __init__(self, name):
        from qemu_xenpv.config import load_config_file
        from qemu_xenpv.hypervisor import Hypervisor
        self.hv = Hypervisor()
        self.buf = bytearray()
        self.cond = threading.Condition()
        cfg = load_config_file(str(guest("demo")), {"name": name})
        cfg.load_images()
        self.dom = self.hv.run(self.hv.create_domain(cfg, accel="tcg"), timeout=60)
        self.hv.run(self._attach(), timeout=10)

    async def _attach(self):
        def sink(data):
            with self.cond:
                self.buf += data
                self.cond.notify_all()
        sink(bytes(self.dom.console.history))
        self.dom.console.add_sink(sink)

    def expect(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = re.search(pattern.encode(), bytes(self.buf))
                if m:
                    del self.buf[:m.end()]
                    return m
                left = deadline - time.monotonic()
                assert left > 0, f"{pattern!r} not seen in {bytes(self.buf[-300:])!r}"
                self.cond.wait(left)

    def run(self, command: str) -> str:
        self.dom.console.write_input(command.encode() + b"\r")
        self.expect(re.escape(command) + r"\r\n")
        return self.expect(r"(.*?)\r\ndemo> ").group(1).decode()

    def close(self):
        try:
            self.hv.run(self.dom.destroy("destroyed"), timeout=30)
        finally:
            self.hv.shutdown()


@pytest.fixture
def local_guest(xenpv):
    g = InProcessGuest(xenpv.name("local"))
    try:
        g.expect(re.escape(PROMPT))
        yield g
    finally:
        g.close()


def test_domain0_maps_and_copies_a_guests_grant(local_guest):
    from qemu_xenpv.gnttab import GNTST_general_error, GrantError
    g, hv = local_guest, local_guest.hv
    domid = g.dom.domid
    ref = int(find(r"gnt-share: ref (\d+)", g.run("gnt-share 0 granted to domain 0")))
    with hv.lock:
        m = hv.grants.map_grant_ref(domid, ref)
        assert m.read(0, 23) == b"granted to domain 0\0\0\0\0"
        m.write(0, b"domain 0 wrote this\0")
    # while mapped, the guest sees the entry in use (GTF_reading|GTF_writing) and
    # cannot revoke it
    assert g.run(f"gnt-show {ref}") == f"gnt-show: ref {ref} flags 0x19: domain 0 wrote this"
    assert g.run(f"gnt-end {ref}") == f"gnt-end: ref {ref} busy (-16)"
    with hv.lock:
        hv.grants.unmap_grant_ref(m)
        assert hv.grants.copy_from_grant(domid, ref, 0, 8) == b"domain 0"
        hv.grants.copy_to_grant(domid, ref, 0, b"copied!\0")
    assert g.run(f"gnt-show {ref}") == f"gnt-show: ref {ref} flags 0x1: copied!"
    assert g.run(f"gnt-end {ref}") == f"gnt-end: ref {ref} revoked"
    with hv.lock, pytest.raises(GrantError) as e:
        hv.grants.map_grant_ref(domid, ref)
    assert e.value.status == GNTST_general_error
    # the builder's reserved grants: entry 1 is the xenstore ring, mappable by domain 0
    with hv.lock:
        m = hv.grants.map_grant_ref(domid, 1, readonly=True)
        assert m.mfn == g.dom.built.store_mfn
        hv.grants.unmap_grant_ref(m)


def test_a_mapping_does_not_outlive_the_granter(local_guest):
    g, hv = local_guest, local_guest.hv
    ref = int(find(r"gnt-share: ref (\d+)", g.run("gnt-share 0 short-lived")))
    with hv.lock:
        m = hv.grants.map_grant_ref(g.dom.domid, ref, readonly=True)
    hv.run(g.dom.destroy("destroyed"), timeout=30)      # RAM unmapped under the mapping
    assert m.revoked
    with hv.lock:
        hv.grants.unmap_grant_ref(m)
        assert not hv.grants.maptrack
