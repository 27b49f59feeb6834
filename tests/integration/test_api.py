"""The Python API on really booted guests: console (pexpect), XenStore,
control, how a guest ended, crash dumps with symbols, and the life-cycle
races it must not lose (a guest that ends at once, a destroy during a
reboot loop, a preserved end).  One daemon for the module, on a private run
directory; every domain name carries the module's tag (the leak check)."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pexpect
import pytest

import qemu_xenpv
from qemu_xenpv import api

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "guest-images"
DEMO = GUESTS / "demo.cfg"
XTFISH = GUESTS / "xtfish.cfg"
TAG = "a" + uuid.uuid4().hex[:8]


def qemu_pids(tag):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"qemu-system-i386") and any(tag.encode() in c for c in cmd):
                out.append(int(p.name))
    return out


def name(base: str) -> str:
    return f"{base}-{TAG}-{uuid.uuid4().hex[:4]}"


@pytest.fixture(scope="module")
def host():
    for elf in ("demo.elf", "xtfish.elf"):
        assert (GUESTS / "build" / elf).exists(), "run 'make' first"
    rd = Path(tempfile.mkdtemp(prefix="xpv-api-", dir="/tmp"))
    h = api.Host(rd)
    try:
        yield h
    finally:
        h.quit()
        deadline = time.time() + 10
        while qemu_pids(TAG) and time.time() < deadline:
            time.sleep(0.05)
        left = qemu_pids(TAG)
        shutil.rmtree(rd, ignore_errors=True)
        assert not left, f"QEMU processes left running: {left}"


def test_boot_console_xenstore_and_poweroff(host):
    with qemu_xenpv.boot(DEMO, host=host, name=name("demo"), memory=24, extra="nocontrol") as dom:
        assert dom.domid > 0 and dom.accel in ("tcg", "kvm") and dom.state in ("running",)
        c = dom.console
        c.expect_exact("demo> ")
        assert b"qemu-xenpv demo guest" in c.before
        c.sendline("echo over the api")
        c.expect("over the api\r\n")
        # XenStore: relative to the domain, read back by the guest
        assert dom.xenstore.read("name") == dom.name
        assert dom.xenstore.read("domid") == str(dom.domid)
        assert dom.xenstore.read("memory/static-max") == str(24 * 1024)
        assert "name" in dom.xenstore.ls("")
        assert dom.xenstore.read("nothing-here", default=None) is None
        dom.xenstore.write("data/greeting", "hello")
        c.expect_exact("demo> ")
        c.sendline("xs-read data/greeting")
        c.expect("hello\r\n")
        with dom.xenstore.watch("data/w") as w:
            assert w.next(5) == f"/local/domain/{dom.domid}/data/w"      # fires at once
            c.expect_exact("demo> ")
            c.sendline("xs-write data/w 1")
            assert w.next(10) == f"/local/domain/{dom.domid}/data/w"
        # the hypervisor log and the console log know this domain
        assert any(f"'{dom.name}' created" in l for l in dom.dmesg())
        c.expect_exact("demo> ")
        c.sendline("poweroff")
        c.expect(pexpect.EOF)
        ending = dom.wait(timeout=30)
        assert (ending.reason, ending.exit_code, c.exitstatus) == ("poweroff", 0, 0)
        assert b"Powering off." in dom.console_output()
    assert dom.state == "dead"


def test_config_from_keywords_pause_and_shutdown(host):
    kernel = GUESTS / "build" / "demo.elf"
    with host.create(kernel=str(kernel), memory=16, name=name("kw"), console=False) as dom:
        c = dom.console                      # attached later: the history is replayed
        c.expect_exact("demo> ")
        dom.pause()
        assert dom.state == "paused"
        c.sendline("echo while paused")
        with pytest.raises(pexpect.TIMEOUT):
            c.expect("while paused\r\n", timeout=1)
        dom.unpause()
        c.expect("while paused\r\n")
        msg = dom.shutdown(wait=True, timeout=30)
        assert f"Shutting down domain {dom.domid}" in msg
        assert dom.wait(timeout=10).reason == "poweroff"


def test_wait_timeout_and_destroy(host):
    dom = host.create(XTFISH, name=name("hang"), extra="hang")
    try:
        with pytest.raises(TimeoutError):
            dom.wait(timeout=0.5)
        assert dom.wait(timeout=0) is None
        dom.destroy()
        ending = dom.wait(timeout=10)
        assert (ending.reason, ending.exit_code) == ("destroyed", 4)
        dom.console.expect(pexpect.EOF)
        assert dom.console.exitstatus == 4
        dom.destroy()                        # already gone: nothing to do
    finally:
        dom.close()


def test_crash_dump_names_the_faulting_function(host):
    with qemu_xenpv.boot(XTFISH, host=host, name=name("fault"), extra="fault") as dom:
        dom.console.expect(pexpect.EOF)
        ending = dom.wait(timeout=10)
    assert ending.crashed and ending.exit_code == 2
    assert "unhandled page fault" in ending.detail
    report = "\n".join(ending.crash_report)
    assert "EIP:    e019:[<" in report and "xtfish_fault+0x" in report
    assert "cr2: 0dead000" in report
    trace = report[report.index("Call trace"):]
    assert "main+0x" in trace and "xenguest_main+0x" in trace


def test_guests_that_end_at_once_are_seen_to_the_end(host):
    """create + console attach are one request: a guest that prints its
    result and powers off within milliseconds is never missed (bug: the
    console attached in a second request and could find it gone)."""
    def one(i):
        with qemu_xenpv.boot(XTFISH, host=host, name=name(f"q{i}"), extra="success quiet",
                             memory=16) as dom:
            dom.console.expect(pexpect.EOF, timeout=60)
            return dom.console.before, dom.wait(timeout=10)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(6)))
    for out, ending in results:
        assert b"Test result: SUCCESS" in out
        assert ending.reason == "poweroff"


def test_destroy_during_a_reboot_loop(host):
    """A guest that reboots as soon as it starts (on_reboot = restart): a
    destroy may arrive while it is between two lives; it must still end it."""
    dom = host.create(XTFISH, name=name("reboot"), extra="reboot", on_reboot="restart")
    try:
        deadline = time.time() + 30
        while dom.console_output().count(b"xtfish: rebooting") < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert dom.console_output().count(b"xtfish: rebooting") >= 2
        while dom.info()["state"] in ("running", "paused") and time.time() < deadline:
            pass                             # until it is between two lives
        dom.destroy()
        assert dom.wait(timeout=15).reason == "destroyed"
        time.sleep(0.5)                      # nothing comes back
        assert dom.name not in [d["name"] for d in host.domains()]
        assert not qemu_pids(dom.name)
    finally:
        dom.close()


def test_wait_on_a_preserved_poweroff(host):
    dom = host.create(XTFISH, name=name("keep"), extra="success", on_poweroff="preserve")
    try:
        ending = dom.wait(timeout=30)
        assert ending.reason == "poweroff"
        info = dom.info()                    # still there, shut down
        assert info["state"] == "shutdown" and "s" in info["flags"]
        dom.destroy()
        assert dom.state == "dead"
    finally:
        dom.close()


def test_gdb_port_and_trace(host, tmp_path):
    trace = tmp_path / "trace.jsonl"
    with host.create(XTFISH, name=name("gdb"), gdb=True, trace_hypercalls=trace,
                     extra="success") as dom:
        assert dom.gdb_port
        s = socket.create_connection(("127.0.0.1", dom.gdb_port), timeout=10)   # the gdbstub
        s.close()
        with pytest.raises(TimeoutError):    # it waits for gdb to continue
            dom.wait(timeout=0.5)
    with host.create(XTFISH, name=name("trace"), trace_hypercalls=trace, extra="success") as dom:
        dom.wait(timeout=30)
    recs = [json.loads(l) for l in trace.read_text().splitlines()]
    assert recs and all({"t", "domain", "vcpu", "hypercall", "args", "result"} <= r.keys()
                        for r in recs)
    assert recs[-1]["hypercall"] == "sched_op" and recs[-1]["args"][0] == "0x2"


def test_errors_are_exceptions_with_one_line(host, tmp_path):
    with pytest.raises(api.XenPVError, match="unknown config variable 'memroy'"):
        host.create(XTFISH, memroy=1)
    with pytest.raises(api.DomainGone, match="does not exist"):
        host.domain("no-such-domain")
    with pytest.warns(api.ConfigWarning, match="'vfb' is not implemented"):
        dom = host.create(XTFISH, name=name("warn"), vfb=["vnc=1"], extra="success")
    with dom:
        assert dom.wait(timeout=30).reason == "poweroff"


def test_a_daemon_of_older_code(monkeypatch, tmp_path):
    """The daemon reports the code it was started from (ping "code"): one
    that still runs a domain keeps serving but a create warns; an idle one
    is replaced when a client connects.  (Other code is simulated by
    changing this process's code id.)"""
    from qemu_xenpv import paths, rundir
    rd = tmp_path / "rd"
    h = api.Host(rd)
    dom = h.create(XTFISH, name=name("old"), extra="hang")
    try:
        old_pid = rundir.ping_reply(h.socket_path)["pid"]
        monkeypatch.setattr(paths, "_CODE_ID", "0123456789abcdef")
        h2 = api.Host(rd)
        with pytest.warns(api.StaleDaemonWarning, match="old code"):
            dom2 = h2.create(XTFISH, name=name("old"), extra="hang")
        assert rundir.ping_reply(h.socket_path)["pid"] == old_pid     # kept: it runs domains
        dom2.destroy()
        dom2.close()
        h2.close()
        dom.destroy()
    finally:
        dom.close()
    # idle now (h is still connected): the next client replaces it
    h3 = api.Host(rd).connect()
    try:
        reply = rundir.ping_reply(h3.socket_path)
        assert reply["pid"] != old_pid and reply["code"] != "0123456789abcdef"
    finally:
        h3.quit()
        h.close()
