"""xl-style control of a PV guest through XenStore: shutdown and reboot
write control/shutdown and wait for the guest to clear it; sysrq writes
control/sysrq; a guest that never acknowledges is reported, not hung on."""

import pexpect

from conftest import guest
from .demo_guest import boot, run, xs


def test_shutdown_powers_the_guest_off_cleanly(xenpv):
    c, name, domid = boot(xenpv)
    r = xenpv.run("shutdown", name)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"Shutting down domain {domid}"
    c.expect_exact("control/shutdown: poweroff: powering off.")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0                     # powered off, not destroyed
    assert name not in xenpv.run("list").stdout
    assert xenpv.run("xenstore-read", f"/local/domain/{domid}/name").returncode == 1


def test_shutdown_wait_returns_once_the_domain_is_gone(xenpv):
    name = xenpv.name("w")
    xenpv.run("create", guest("demo"), f"name={name}", check=True)
    c = xenpv.spawn("console", name)
    c.expect_exact("demo> ")
    r = xenpv.run("shutdown", "-w", name)
    assert r.returncode == 0, r.stderr
    assert "it ended (poweroff)" in r.stderr
    assert name not in xenpv.run("list").stdout
    c.expect(pexpect.EOF)


def test_reboot_restarts_the_domain(xenpv):
    c, name, domid = boot(xenpv)
    r = xenpv.run("reboot", name)
    assert r.returncode == 0 and f"Rebooting domain {domid}" in r.stderr
    c.expect_exact("control/shutdown: reboot: rebooting.")
    c.expect_exact("qemu-xenpv demo guest")      # on_reboot = "restart": a fresh boot
    c.expect_exact("demo> ")
    assert run(c, "xs-read domid") == str(domid)
    assert run(c, "xs-read control/shutdown") == ""
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


def test_sysrq_reaches_the_guest(xenpv):
    c, name, domid = boot(xenpv)
    r = xenpv.run("sysrq", name, "h")
    assert r.returncode == 0, r.stderr
    c.expect_exact("sysrq: 'h'")
    assert xs(xenpv, "xenstore-read", f"/local/domain/{domid}/control/sysrq") == "\n"
    r = xenpv.run("sysrq", name, "too-long")
    assert r.returncode == 1 and "one character" in r.stderr
    c.sendline("poweroff")
    c.expect(pexpect.EOF)


def test_a_guest_that_never_acknowledges_is_reported(xenpv):
    c, name, domid = boot(xenpv, "deaf", "extra=nocontrol")
    r = xenpv.run("shutdown", "--timeout", "1", name)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not acknowledge the poweroff request within 1 s" in lines[0]
    assert f"qemu-xenpv destroy {name}" in lines[0]
    assert xs(xenpv, "xenstore-read", f"/local/domain/{domid}/control/shutdown") == "poweroff\n"
    assert run(c, "echo still running") == "still running"
    assert xenpv.run("destroy", name).returncode == 0
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 4


def test_control_errors(xenpv):
    c, name, domid = boot(xenpv)
    r = xenpv.run("shutdown", "no-such-domain")
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
