"""PV drivers in an HVM guest: the hvm-pv guest finds the XenPVHVM table,
turns paging on, and reaches the hypercall ABI through the hypercall area
our layer writes: xen_version, console_io, HVM params, add_to_physmap for
shared_info and grant frames, the GSI callback, the PV console ring,
XenStore, blkfront, netfront, shutdown."""

import pytest

from pathlib import Path
import importlib.util

# tests/conftest.py's helpers, by path: `from conftest import` picks
# tests/unit/conftest.py when unit and integration tests run together
_spec = importlib.util.spec_from_file_location(
    "qemu_xenpv_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
GUESTS, qemu_pids = _conftest.GUESTS, _conftest.qemu_pids


def test_pv_drivers_in_an_hvm_guest(xenpv):
    if not (GUESTS / "build" / "hvm-pv.elf").exists():
        pytest.fail("guest-images/build/hvm-pv.elf is not built: run 'make'")
    name = xenpv.name("hvmpv")
    r = xenpv.run("create", "-c", GUESTS / "hvm-pv.cfg", f"name={name}", timeout=60)
    out = r.stdout
    assert r.returncode == 0, r.stderr + out
    assert "hvm-pv: Xen 4.17.0-qemu-xenpv" in out                 # pointers via page walk
    assert "hvm-pv: hello through the PV console ring" in out      # console back end
    assert "hvm-pv: xenstore domid = " in out
    assert f"hvm-pv: xenstore name = {name}" in out
    assert "hvm-pv: grant frame 0 placed at pfn" in out
    assert "hvm-pv: vector callback f3: " in out
    assert "hvm-pv: no PV disk (device/vbd): blkfront not tried" in out
    assert "hvm-pv: no PV NIC (device/vif): netfront not tried" in out
    assert "check failed" not in out
    assert "Test result: SUCCESS" in out
    assert "SCHEDOP_shutdown returned" not in out
    dmesg = xenpv.run("dmesg").stdout
    assert "hvm-pv: hello through console_io" in dmesg
    assert "HVM callback: GSI 3 (COM2)" in dmesg
    assert "HVM callback: vector 0xf3 (MSI-X)" in dmesg             # then the vector type
    assert "shutdown: poweroff (SCHEDOP_shutdown)" in dmesg
    assert not qemu_pids(xenpv.tag)


def test_same_domain_again_after_it_ended(xenpv):
    """Event channels, XenStore tree and ring are released when an HVM
    domain ends: the same name boots again in the same hypervisor."""
    name = xenpv.name("again")
    for _ in range(2):
        r = xenpv.run("create", "-c", GUESTS / "hvm-pv.cfg", f"name={name}", timeout=60)
        assert r.returncode == 0 and "Test result: SUCCESS" in r.stdout, r.stderr + r.stdout
    log = (xenpv.rundir / "daemon.log").read_text()
    assert "Traceback" not in log, log


def test_blkfront_in_an_hvm_guest(xenpv, tmp_path):
    """A grant table placed with XENMAPSPACE_grant_table and a disk through
    blkfront, all through the HVM hypercall path: the guest reads what we
    put in sector 0, writes a page at sector 8 that lands in the image,
    reads it back, and closes the device; the back end logs the connection."""
    img = tmp_path / "hvm.img"
    data = bytearray(1 << 20)
    stamp = b"qemu-xenpv: sector 0 of the HVM disk"
    data[:len(stamp)] = stamp
    img.write_bytes(data)
    name = xenpv.name("hvmblk")
    r = xenpv.run("create", "-c", GUESTS / "hvm-pv.cfg", f"name={name}",
                  f"disk=['file:{img},xvda,w']", timeout=90)
    out = r.stdout
    assert r.returncode == 0, r.stderr + out
    assert "disk/vif of an HVM domain are PV devices only" in r.stderr
    assert "hvm-pv: grant table: 1 frame(s), at most 4" in out
    assert "hvm-pv: blkfront connected: 2048 sectors of 512 bytes" in out
    assert f"hvm-pv: blk sector 0: '{stamp.decode()}'" in out
    assert "hvm-pv: blk wrote and read back 4096 bytes at sector 8: same" in out
    assert "hvm-pv: blkfront closed" in out
    assert "check failed" not in out and "Test result: SUCCESS" in out
    disk = img.read_bytes()
    assert disk[:len(stamp)] == stamp                               # the flush carried no data
    msg = b"hvm-pv wrote this through blkfront\0"
    assert disk[4096:4096 + len(msg)] == msg
    assert all(disk[4096 + i] == (i * 7 + 3) & 0xFF for i in range(len(msg), 4096))
    dmesg = xenpv.run("dmesg").stdout
    assert "vbd 51712: connected (xvda, 2048 sectors, raw" in dmesg
    assert "vbd 51712: disconnected" in dmesg
    assert not qemu_pids(xenpv.tag)



def test_netfront_in_an_hvm_guest(xenpv):
    """A NIC through netfront on the HVM hypercall path: the hvm-pv guest
    connects its vif, sends an ARP request for A.B.C.1 of its own address,
    and a PV guest on the same internal switch answers it."""
    peer = xenpv.name("hvmnetpeer")
    r = xenpv.run("create", GUESTS / "net-a.cfg", f"name={peer}", timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        name = xenpv.name("hvmnet")
        r = xenpv.run("create", "-c", GUESTS / "hvm-pv.cfg", f"name={name}",
                      "vif=['ip=10.0.7.9']", timeout=90)
        out = r.stdout
        assert r.returncode == 0, r.stderr + out
        assert "hvm-pv: netfront device/vif/0" in out and "ip 10.0.7.9" in out
        assert "hvm-pv: netfront: 10.0.7.1 is at 0:16:3e:0:7:1" in out   # net-a.cfg's MAC
        assert "hvm-pv: netfront closed" in out
        assert "check failed" not in out and "Test result: SUCCESS" in out
        dmesg = xenpv.run("dmesg").stdout
        assert "vif 0: connected (mac 00:16:3e:" in dmesg and "rx-copy" in dmesg
    finally:
        xenpv.run("destroy", peer, timeout=30)
    assert not qemu_pids(xenpv.tag)
