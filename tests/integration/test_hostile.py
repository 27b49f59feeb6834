"""A hostile guest tries to write the hypervisor: every attempt must fault
or be refused, and the guest (only) keeps running."""

import pexpect

from conftest import guest


def test_guest_cannot_write_the_shim(xenpv):
    c = xenpv.spawn("create", "-c", guest("shimwrite"), f"name={xenpv.name('hostile')}")
    c.expect("Test result: (SUCCESS|FAILURE)", timeout=120)
    result = c.match.group(1).decode()
    out = c.before.decode(errors="replace")
    c.expect(pexpect.EOF)
    c.close()
    assert result == "SUCCESS", out
    for check in ("m2p-write", "idt-write", "gdt-write", "hypervisor-hole", "uvm-low-mfns",
                  "uvm-hypervisor-va", "pagetables-readonly", "mmu-update-pt-writable"):
        assert f"check {check}: ok" in out
    assert c.exitstatus == 0
