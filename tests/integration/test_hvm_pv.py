"""PV drivers in an HVM guest: the hvm-pv guest finds the XenPVHVM table,
turns paging on, and reaches the hypercall ABI through the hypercall area
our layer writes: xen_version, console_io, HVM params, add_to_physmap for
shared_info, the GSI callback, the PV console ring, XenStore, shutdown."""

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
    assert "check failed" not in out
    assert "Test result: SUCCESS" in out
    assert "SCHEDOP_shutdown returned" not in out
    dmesg = xenpv.run("dmesg").stdout
    assert "hvm-pv: hello through console_io" in dmesg
    assert "HVM callback: GSI 3 (COM2)" in dmesg
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
