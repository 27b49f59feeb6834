"""The domain life-cycle fixes under the API, without QEMU: restart
callbacks per hypervisor, a destroy during a reboot, wait() on a preserved
domain, HVM shutdown with a timeout, the daemon's start-up and retirement,
setup.sh's dependency check, and the crash dump's symbols."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import types
from pathlib import Path

import pytest

from qemu_xenpv.hypervisor import Hypervisor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hv():
    h = Hypervisor()
    try:
        yield h
    finally:
        h.shutdown()


# ---- (c) restart callbacks belong to one hypervisor ----

def test_restart_callbacks_are_per_hypervisor(hv):
    assert "on_domain_restart" not in vars(Hypervisor)
    other = Hypervisor()
    try:
        hv.on_domain_restart.append(lambda old, new: None)
        assert other.on_domain_restart == []
    finally:
        other.shutdown()


# ---- (b) a destroy that arrives while a domain reboots ----

class FakeDomain:
    """Just enough of a Domain for Hypervisor.restart_domain/destroy_domain."""
    started = []

    def __init__(self, hv, domid, config, accel="tcg", doorbell="ivshmem", gdb_port=None,
                 scramble_p2m=False, **kw):
        self.hv, self.domid, self.config, self.name = hv, domid, config, config.name
        self.accel, self.doorbell, self.gdb_port, self.scramble_p2m = accel, doorbell, gdb_port, False
        self.state, self.end_reason, self.on_end, self._end_waiters = "running", None, [], []
        self.console_port = None
        FakeDomain.started.append(self)

    async def _teardown(self):
        await asyncio.sleep(0.05)
        self.state = "dead"

    async def start(self):
        await asyncio.sleep(0.1)
        self.state = "running"

    async def destroy(self, reason=None):
        if self.state == "dead":
            return
        self.end_reason = self.end_reason or reason
        await self._teardown()
        self._notify_end()

    def _notify_end(self):
        for fn in list(self.on_end):
            fn(self)
        self.hv.domain_ended(self)


@pytest.mark.parametrize("when", [0.0, 0.03, 0.1], ids=["at-once", "going-down", "coming-up"])
def test_destroy_during_a_reboot_destroys_what_the_reboot_makes(hv, monkeypatch, when):
    monkeypatch.setattr(Hypervisor, "_domain_class", staticmethod(lambda cfg: FakeDomain))
    FakeDomain.started = []
    cfg = types.SimpleNamespace(name="r", memory=1, vcpus=1, kernel="k")
    old = FakeDomain(hv, 5, cfg)
    hv.domains[5] = old
    ended = []
    old.on_end.append(lambda d: ended.append(d.end_reason))

    async def scenario():
        hv.loop.create_task(hv.restart_domain(old))       # as _after_shutdown does
        await asyncio.sleep(when)
        await hv.destroy_domain(hv.domains.get(5, old), "destroyed")
        await asyncio.sleep(0.3)                           # nothing restarts afterwards
    hv.run(scenario(), timeout=10)
    assert 5 not in hv.domains
    assert ended == ["destroyed"]
    assert all(d.state == "dead" for d in FakeDomain.started)
    assert hv._restarting == {} and hv._destroy_after_restart == {}


# ---- (d) wait() on a preserved domain ----

@pytest.mark.parametrize("reason,key", [("poweroff", "on_poweroff"), ("reboot", "on_reboot"),
                                        ("crash", "on_crash")])
def test_wait_returns_for_every_preserved_end(hv, reason, key):
    from qemu_xenpv.config import DomainConfig
    from qemu_xenpv.domain import Domain
    cfg = DomainConfig(name="p", kernel="k")
    setattr(cfg, key, "preserve")
    dom = Domain(hv, 9, cfg, accel="tcg")
    dom.state, dom.end_reason = ("crashed" if reason == "crash" else "shutdown"), reason
    assert hv.run(asyncio.wait_for(dom.wait(), 2), timeout=5) == reason


def test_wait_still_waits_for_a_running_or_destroyed_end(hv):
    from qemu_xenpv.config import DomainConfig
    from qemu_xenpv.domain import Domain
    dom = Domain(hv, 9, DomainConfig(name="p", kernel="k"), accel="tcg")
    dom.state, dom.end_reason = "shutdown", "poweroff"          # on_poweroff = destroy
    with pytest.raises(asyncio.TimeoutError):
        hv.run(asyncio.wait_for(dom.wait(), 0.2), timeout=5)


# ---- (e) HVM shutdown --timeout ----

def test_hvm_request_shutdown_accepts_a_timeout(hv):
    from qemu_xenpv.hvm.domain import HVMDomain
    cfg = types.SimpleNamespace(name="h", uuid=None, on_poweroff="destroy",
                                on_reboot="restart", on_crash="destroy")
    dom = HVMDomain(hv, 3, cfg, accel="tcg")
    sent = []

    class Machine:
        async def command(self, cmd, **kw):
            sent.append(cmd)
    dom.machine, dom.state = Machine(), "running"
    resp = hv.run(dom.request_shutdown("poweroff", False, timeout=5.0), timeout=5)
    assert resp["ok"] and sent == ["system_powerdown"]


# ---- (g) the daemon's start-up ----

def test_a_daemon_that_cannot_start_says_why_at_once(tmp_path, monkeypatch):
    from qemu_xenpv import daemon
    from qemu_xenpv.errors import XenPVError
    rd = tmp_path / "rd"
    rd.mkdir()
    (rd / "control.sock").mkdir()          # the daemon cannot replace this with its socket
    (rd / "control.sock" / "x").write_text("")
    monkeypatch.setenv("QEMU_XENPV_RUNDIR", str(rd))
    t0 = time.monotonic()
    with pytest.raises(XenPVError, match="failed to start: .*(Error|error)"):
        daemon.ensure_daemon(timeout=60, rd=rd)
    assert time.monotonic() - t0 < 30


def test_ping_tells_a_stale_socket_from_a_busy_daemon(tmp_path):
    from qemu_xenpv.daemon import _ping
    path = tmp_path / "s"
    assert not _ping(path)                          # no socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    assert not _ping(path)                          # bound, nobody listening: refused
    s.listen(1)
    assert _ping(path, timeout=0.2)                 # listening but silent: busy, not gone
    s.close()


def test_a_retiring_daemon_leaves_its_successors_socket(tmp_path):
    from qemu_xenpv.daemon import Daemon
    d = Daemon.__new__(Daemon)
    path = tmp_path / "control.sock"
    path.write_text("ours")
    st = path.stat()
    d._sock_id = (st.st_ino, st.st_ctime_ns)
    path.unlink()
    time.sleep(0.01)
    path.write_text("the successor's")              # a new file (maybe the same inode number)
    d._unlink_own_socket(path)
    assert path.exists()
    st = path.stat()
    d._sock_id = (st.st_ino, st.st_ctime_ns)
    d._unlink_own_socket(path)
    assert not path.exists()


# ---- (f) setup.sh reinstalls when a dependency is missing ----

def test_setup_checks_every_dependency_of_pyproject():
    import tomllib
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + meta["optional-dependencies"]["test"]
    modules = {"pytest-xdist": "xdist", "pyelftools": "elftools", "qemu.qmp": "qemu.qmp"}
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    imports = re.search(r"-c 'import (qemu_xenpv[^']+)'", setup).group(1)
    names = {n.strip() for n in imports.split(",")}
    for dep in deps:
        pkg = re.split(r"[<>=\[ ]", dep)[0]
        assert modules.get(pkg, pkg) in names, f"setup.sh does not check {pkg}"
    assert "pyproject.toml -nt" in setup              # new entry points reinstall too


# ---- the crash dump's symbols ----

def test_symbols_for_code_return_addresses_and_the_hypercall_page(demo_elf):
    from elftools.elf.elffile import ELFFile
    from qemu_xenpv import crashdump
    with open(demo_elf, "rb") as f:
        syms = {s.name: (s["st_value"], s["st_size"])
                for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()}
    main, size = syms["main"]
    path = str(demo_elf)
    assert crashdump.symbolize(path, main + 4) == f"main+0x4/{size:#x}"
    # a call to a noreturn function can be the last instruction: its return
    # address is the function's end, still "main" (looked up one byte back)
    assert crashdump.symbolize(path, main + size, return_address=True).startswith("main+")
    hp, _ = syms["hypercall_page"]
    assert crashdump.symbolize(path, hp + 29 * 32 + 7).startswith("hypercall_page+0x3a7")
    assert crashdump.symbolize(None, main) == ""


def test_frame_chain_follows_ebp():
    from qemu_xenpv.crashdump import frame_chain
    mem = {0x1000: (0x1100, 0xAAA), 0x1100: (0x1200, 0xBBB), 0x1200: (0x1000, 0xCCC)}

    def read(va, n):
        if va not in mem:
            return None
        nxt, ret = mem[va]
        return nxt.to_bytes(4, "little") + ret.to_bytes(4, "little")
    assert frame_chain(read, 0x1000) == [0xAAA, 0xBBB, 0xCCC]   # stops: the chain goes down
    assert frame_chain(read, 0) == []


def test_a_daemon_does_not_retire_while_a_client_starts_one(tmp_path):
    """The daemon leaves only under the run directory's start lock: a client
    that holds it (starting a successor, or about to use us) keeps it."""
    import fcntl
    from qemu_xenpv.daemon import Daemon
    d = Daemon(tmp_path)
    closed = []
    server = types.SimpleNamespace(close=lambda: closed.append(1))
    try:
        with open(tmp_path / "lock", "a") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            assert d.hv.run(d._retire(server), timeout=5) is False
            assert not closed
        assert d.hv.run(d._retire(server), timeout=5) is True
        assert closed
    finally:
        d.hv.shutdown()
