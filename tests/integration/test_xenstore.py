"""XenStore between booted guests, the host CLI and xenstored's socket:
reads, writes, watches, transactions, permissions, the tree xl writes,
domain introduce/release, and a hostile client that must not stall anyone."""

import time

import pexpect

from conftest import guest
from .demo_guest import boot, poweroff, run, xs


def test_guest_writes_host_reads_and_the_standard_tree(xenpv):
    c, name, domid = boot(xenpv)
    assert run(c, "xs-read domid") == str(domid)
    assert run(c, "xs-read name") == name
    assert run(c, "xs-write data/greeting hello from the guest") == "xs-write: ok"
    dp = f"/local/domain/{domid}"
    assert xs(xenpv, "xenstore-read", f"{dp}/data/greeting") == "hello from the guest\n"
    tree = xs(xenpv, "xenstore-ls", "-p", dp)
    for line in (f'name = "{name}"  (n0,r{domid})', f'domid = "{domid}"',
                 f'shutdown = ""  (n{domid})', 'target = "32768"', 'port = "1"',
                 'type = "xenconsoled"', 'greeting = "hello from the guest"  '
                 f'(n{domid})'):
        assert line in tree, line
    assert xs(xenpv, "xenstore-read", f"{dp}/vm").startswith("/vm/")
    assert run(c, "xs-ls device") == "suspend"          # libxl's device/suspend/event-channel
    assert xs(xenpv, "xenstore-ls", "-p", f"{dp}/device") == \
        f'suspend = ""  (n0,r{domid})\n event-channel = ""  (n{domid})\n'
    assert poweroff(c) == 0


def test_host_write_fires_the_guests_watch(xenpv):
    c, name, domid = boot(xenpv)
    c.sendline("xs-watch data/knob 2")
    c.expect_exact("watch: data/knob")          # fires once on registration
    xenpv.run("xenstore-write", f"/local/domain/{domid}/data/knob", "turned", check=True)
    c.expect_exact("watch: data/knob")
    c.expect_exact("xs-watch: done")
    c.expect_exact("demo> ")
    assert run(c, "xs-read data/knob") == "turned"
    assert poweroff(c) == 0


def test_transaction_conflict_is_eagain_and_a_retry_succeeds(xenpv):
    c, name, domid = boot(xenpv)
    path = f"/local/domain/{domid}/data/counter"
    assert run(c, "xs-write data/counter 1") == "xs-write: ok"
    assert run(c, "xs-tx start").startswith("xs-tx: started")
    assert run(c, "xs-tx read data/counter") == "xs-tx: 1"
    xenpv.run("xenstore-write", path, "5", check=True)          # someone else wins
    assert run(c, "xs-tx write data/counter 2") == "xs-tx: ok"
    assert run(c, "xs-tx commit") == "xs-tx: commit failed: EAGAIN"
    assert xs(xenpv, "xenstore-read", path) == "5\n"
    assert run(c, "xs-tx start").startswith("xs-tx: started")  # retry the whole thing
    assert run(c, "xs-tx read data/counter") == "xs-tx: 5"
    assert run(c, "xs-tx write data/counter 6") == "xs-tx: ok"
    assert run(c, "xs-tx commit") == "xs-tx: committed"
    assert xs(xenpv, "xenstore-read", path) == "6\n"
    assert poweroff(c) == 0


def test_guest_permissions_are_enforced(xenpv):
    c, name, domid = boot(xenpv)
    assert run(c, "xs-read /local/domain/0/name") == "xs-read: EACCES"
    assert run(c, "xs-write name evil") == "xs-write: EACCES"
    assert run(c, "xs-write /local/domain/0/backend/evil x") == "xs-write: EACCES"
    assert run(c, "xs-rm control") == "xs-rm: EACCES"
    assert run(c, "xs-read /local/domain/0/backend/console/%d/0/frontend" % domid) == \
        f"/local/domain/{domid}/console"            # the backend dir is readable to it
    assert xs(xenpv, "xenstore-read", f"/local/domain/{domid}/name") == name + "\n"
    assert poweroff(c) == 0


def test_socket_watch_sees_domains_come_and_go(xenpv):
    from qemu_xenpv.xenstore.client import XsClient
    c, name, domid = boot(xenpv)
    cl = XsClient(xenpv.rundir / "xenstored.sock")
    try:
        cl.watch("@releaseDomain", "rel")
        cl.watch(f"/local/domain/{domid}/data", "data")
        seen = {cl.read_watch(5), cl.read_watch(5)}
        assert seen == {("@releaseDomain", "rel"), (f"/local/domain/{domid}/data", "data")}
        run(c, "xs-write data/x 1")
        assert cl.read_watch(5) == (f"/local/domain/{domid}/data/x", "data")
        assert poweroff(c) == 0
        events = set()
        deadline = time.time() + 10
        while ("@releaseDomain", "rel") not in events and time.time() < deadline:
            ev = cl.read_watch(1)
            if ev:
                events.add(ev)
        assert ("@releaseDomain", "rel") in events
        assert (f"/local/domain/{domid}/data", "data") in events   # its tree went away
        assert f"{domid}" not in cl.directory("/local/domain")
    finally:
        cl.close()


def test_cli_errors_are_one_line(xenpv):
    r = xenpv.run("xenstore-read", "/local/domain/0/name")
    assert r.returncode != 0 and "no daemon" in r.stderr and len(r.stderr.splitlines()) == 1
    c, name, domid = boot(xenpv)
    r = xenpv.run("xenstore-read", "/no/such/node")
    assert r.returncode == 1
    assert r.stderr.strip() == "qemu-xenpv: error: xenstore-read /no/such/node: ENOENT " \
                               "(No such file or directory)"
    r = xenpv.run("xenstore-write", "bad//path", "x")
    assert r.returncode == 1 and "EINVAL" in r.stderr and "Traceback" not in r.stderr
    xenpv.run("xenstore-write", "/tool/test/a/b", "1", check=True)
    xenpv.run("xenstore-rm", "/tool/test", check=True)
    assert xenpv.run("xenstore-read", "/tool/test/a/b").returncode == 1
    w = xenpv.spawn("xenstore-watch", "-n", "2", "/tool/w")
    w.expect_exact("/tool/w")
    xenpv.run("xenstore-write", "/tool/w/z", "1", check=True)
    w.expect_exact("/tool/w/z")
    w.expect(pexpect.EOF)
    w.close()
    assert w.exitstatus == 0
    assert poweroff(c) == 0


def test_hostile_client_gets_errors_and_stalls_nobody(xenpv):
    c, name, domid = boot(xenpv, "victim")
    h = xenpv.spawn("create", "-c", guest("xsflood"), f"name={xenpv.name('xsflood')}",
                    "extra=flood=4")
    h.expect_exact("xsflood: hostile XenStore client")
    # while it floods, the other guest and the host are served promptly
    for i in range(3):
        t0 = time.monotonic()
        assert run(c, "xs-read domid") == str(domid)
        assert time.monotonic() - t0 < 2.0
        t0 = time.monotonic()
        assert xs(xenpv, "xenstore-read", f"/local/domain/{domid}/name") == name + "\n"
        assert time.monotonic() - t0 < 3.0
    h.expect(r"Test result: (\w+)", timeout=60)
    out = h.before.decode(errors="replace")
    assert h.match.group(1) == b"SUCCESS", out
    for check in ("flood-nothing-lost", "perm-read-dom0", "quota-transactions",
                  "oversized-breaks-connection", "oversized-reconnect",
                  "bad-indices-break-connection", "bad-indices-reconnect", "works-after-abuse"):
        assert f"check {check}: ok" in out
    h.expect(pexpect.EOF)
    dmesg = xenpv.run("dmesg").stdout
    assert "xenstore: ring broken (error 3)" in dmesg and "(error 2)" in dmesg
    assert run(c, "xs-read name") == name
    assert poweroff(c) == 0
