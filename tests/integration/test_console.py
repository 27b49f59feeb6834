"""The PV console back end with a booted guest: the ring reaches create -c,
the per-domain log and the TCP port; input works from both; typed input
larger than the ring is queued, not dropped; xl's console/* keys."""

import re
import socket
import time

import pexpect

from conftest import guest
from .demo_guest import boot, poweroff, run


def _tcp_until(s, needle: bytes, buf: bytes = b"", timeout: float = 20) -> bytes:
    deadline = time.time() + timeout
    while needle not in buf and time.time() < deadline:
        try:
            buf += s.recv(4096)
        except socket.timeout:
            pass
    assert needle in buf, buf[-300:]
    return buf


def test_log_tcp_and_console_see_the_same_ring_both_ways(xenpv):
    name = xenpv.name("con")
    r = xenpv.run("create", guest("demo"), f"name={name}", check=True)
    port = int(re.search(r"console on port (\d+)", r.stderr).group(1))
    row = next(l for l in xenpv.run("list").stdout.splitlines() if l.startswith(name))
    assert str(port) in row.split()
    c = xenpv.spawn("console", name)
    c.expect_exact("demo> ")                              # replayed history
    s = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        s.sendall(b"echo typed-on-tcp\r")                  # TCP -> guest -> both
        c.expect_exact("typed-on-tcp\r\n")
        _tcp_until(s, b"typed-on-tcp\r\n")
        c.sendline("echo typed-on-console")                # console -> guest -> both
        c.expect_exact("typed-on-console\r\n")
        _tcp_until(s, b"typed-on-console\r\n")
    finally:
        s.close()
    log = xenpv.rundir / "console" / f"{name}.log"
    deadline = time.time() + 5
    while b"typed-on-console\r\n" not in log.read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    text = log.read_bytes()
    assert b"qemu-xenpv demo guest" in text and b"typed-on-tcp\r\n" in text
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
    assert b"Powering off." in log.read_bytes()


def test_input_beyond_the_ring_is_queued_not_dropped(xenpv):
    c, name, domid = boot(xenpv)
    lines = [f"echo line-{i:02d}-" + "x" * 60 for i in range(40)]   # ~3 KiB, ring is 1 KiB
    c.send("\r".join(lines) + "\r")
    for i in range(40):
        c.expect(f"\nline-{i:02d}-x{{60}}\r\n", timeout=60)
    c.expect_exact("demo> ")
    assert poweroff(c) == 0


def test_console_keys_in_xenstore(xenpv):
    from qemu_xenpv.xenstore.client import XsClient
    c, name, domid = boot(xenpv)
    fe = f"/local/domain/{domid}/console"
    be = f"/local/domain/0/backend/console/{domid}/0"
    with XsClient(xenpv.rundir / "xenstored.sock") as cl:
        for key, value in (("port", b"2"), ("type", b"xenconsoled"), ("limit", b"1048576"),
                           ("output", b"pty"), ("backend", be.encode())):
            assert cl.read(f"{fe}/{key}") == value, key
        assert int(cl.read(f"{fe}/ring-ref")) > 0
        assert cl.get_perms(fe) == ["n0", f"r{domid}"]
        assert cl.read(f"{be}/frontend") == fe.encode()
        assert cl.read(f"{be}/frontend-id") == str(domid).encode()
        # the guest sees its console keys, read-only
        assert run(c, "xs-read console/type") == "xenconsoled"
        assert run(c, "xs-write console/type evil") == "xs-write: EACCES"
        assert poweroff(c) == 0
        deadline = time.time() + 10
        while str(domid) in cl.directory("/local/domain/0/backend/console") and \
                time.time() < deadline:
            time.sleep(0.05)
        assert str(domid) not in cl.directory("/local/domain/0/backend/console")
