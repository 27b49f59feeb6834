"""The Python API's pure parts (no QEMU): config from files, dicts and
keyword arguments; the console frame protocol and the pexpect console over
a socketpair standing in for the daemon; endings and exit codes."""

from __future__ import annotations

import json
import socket
import struct
import threading
import types
from pathlib import Path

import pexpect
import pytest

import qemu_xenpv
from qemu_xenpv import api
from qemu_xenpv.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO_CFG = ROOT / "guest-images" / "demo.cfg"
FRAME = struct.Struct("<cI")


def frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def end_frame(reason="poweroff", exit=0, **kw) -> bytes:
    return frame(b"E", json.dumps(dict(reason=reason, exit=exit, **kw)).encode())


# ---- the package root ----

def test_package_root_reexports_the_api():
    assert qemu_xenpv.boot is api.boot
    assert qemu_xenpv.Host is api.Host and qemu_xenpv.Domain is api.Domain
    assert {"boot", "Host", "Domain", "Console", "Ending"} <= set(qemu_xenpv.__all__)
    with pytest.raises(AttributeError):
        qemu_xenpv.no_such_thing


def test_exit_codes_match_the_domain_table():
    from qemu_xenpv.domain import EXIT_CODES
    assert api.EXIT_CODES == EXIT_CODES


# ---- config ----

def test_config_from_a_file_with_overrides(demo_elf):
    cfg = api.load_config(DEMO_CFG, {"memory": 48, "extra": "debug"})
    assert cfg.memory == 48 and cfg.cmdline.endswith("debug")
    assert cfg.kernel == str(demo_elf)                # relative to the file
    assert cfg.kernel_image is not None               # images were loaded and checked


def test_config_from_a_dict_and_from_keywords(demo_elf, tmp_path):
    a = api.load_config({"kernel": str(demo_elf), "memory": 16}, {"name": "x"})
    b = api.load_config(None, {"kernel": str(demo_elf), "memory": 16, "name": "x"})
    assert (a.name, a.memory, a.kernel) == (b.name, b.memory, b.kernel) == ("x", 16, str(demo_elf))
    rel = api.load_config({"kernel": "demo.elf"}, base_dir=demo_elf.parent)
    assert rel.kernel == str(demo_elf)


def test_config_dict_checks_variables_as_a_file_does(demo_elf):
    with pytest.raises(ConfigError, match=r"unknown config variable 'memroy' \(did you mean 'memory'\?\)"):
        api.load_config({"kernel": str(demo_elf), "memroy": 32})
    cfg = api.load_config({"kernel": str(demo_elf), "vfb": ["vnc=1"]}, load_images=False)
    assert any("'vfb' is not implemented" in w for w in cfg.warnings)


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        api.load_config(tmp_path / "nope.cfg")
    with pytest.raises(ConfigError, match="no kernel given"):
        api.load_config({"memory": 32})
    cfg = api.load_config(DEMO_CFG)
    with pytest.raises(ConfigError, match="overrides cannot be applied"):
        api.load_config(cfg, {"memory": 1})


def test_free_port_is_bindable():
    port = api.free_port()
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.close()


# ---- endings ----

def test_ending_from_a_daemon_record():
    e = api.Ending.from_record({"reason": "crash", "exit": 2, "detail": "unhandled page fault",
                                "report": ["d1v0 (x) crashed:", "EIP: ..."]})
    assert e.crashed and e.exit_code == 2 and e.crash_report[0].startswith("d1v0")
    assert str(e) == "crash (unhandled page fault)"
    assert api.Ending.from_record({"reason": "destroyed"}).exit_code == 4
    assert api.Ending.from_record({}).reason == "destroyed"


# ---- the console stream (frames) ----

def test_console_stream_parses_split_frames():
    a, b = socket.socketpair()
    try:
        st = api.ConsoleStream(a, pending=frame(b"D", b"hel")[:5])
        data = frame(b"D", b"hel")[5:] + frame(b"D", b"lo") + end_frame("crash", 2)
        b.sendall(data[:2])
        assert st.events(0.05) is None                    # nothing complete yet
        b.sendall(data[2:])
        evs = st.events(1)
        while not any(k == "end" for k, _ in evs):
            evs += st.events(1)
        assert [p for k, p in evs if k == "data"] == [b"hel", b"lo"]
        assert st.ending.reason == "crash" and st.ending.exit_code == 2
        b.close()
        assert st.events(1) == [("closed", None)]
    finally:
        a.close()


def test_console_stream_sends_input_frames():
    a, b = socket.socketpair()
    st = api.ConsoleStream(a)
    st.send_input(b"ls\r")
    st.send_input(b"")                                    # nothing for nothing
    assert b.recv(100) == frame(b"I", b"ls\r")
    a.close()
    b.close()


# ---- the pexpect console ----

class FakeDaemon:
    """The daemon's end of a console connection."""

    def __init__(self):
        self.ours, theirs = socket.socketpair()
        self.console = api.Console(api.ConsoleStream(theirs), "t", timeout=2)

    def out(self, data: bytes) -> None:
        self.ours.sendall(frame(b"D", data))

    def inputs(self) -> bytes:
        self.ours.settimeout(2)
        buf = b""
        while len(buf) < FRAME.size or len(buf) < FRAME.size + FRAME.unpack(buf[:FRAME.size])[1]:
            buf += self.ours.recv(4096)
        kind, n = FRAME.unpack(buf[:FRAME.size])
        assert kind == b"I"
        return buf[FRAME.size:FRAME.size + n]


def test_console_expect_sendline_and_end():
    d = FakeDaemon()
    c = d.console
    d.out(b"banner\r\ndemo> ")
    c.expect_exact("demo> ")
    assert c.before == b"banner\r\n"
    c.sendline("echo hi")
    assert d.inputs() == b"echo hi\n"
    c.sendcontrol("c")
    assert d.inputs() == b"\x03"
    d.out(b"hi\r\n")
    d.ours.sendall(end_frame("poweroff", 0))
    c.expect(r"hi\r\n")
    assert c.expect([pexpect.EOF]) == 0
    assert not c.isalive() and c.exitstatus == 0 and c.ending.reason == "poweroff"
    c.close()
    d.ours.close()


def test_console_timeout_then_data():
    d = FakeDaemon()
    with pytest.raises(pexpect.TIMEOUT):
        d.console.expect("never", timeout=0.2)
    threading.Timer(0.1, d.out, args=(b"later",)).start()
    d.console.expect("later", timeout=5)
    d.console.close()
    d.ours.close()


def test_console_logs_and_decodes(tmp_path):
    ours, theirs = socket.socketpair()
    c = api.Console(api.ConsoleStream(theirs), "t", timeout=2, encoding="utf-8")
    log = open(tmp_path / "log", "w")
    c.logfile_read = log
    ours.sendall(frame(b"D", "h\u00e9llo\n".encode()) + end_frame("crash", 2, detail="boom"))
    c.expect("llo")
    c.expect(pexpect.EOF)
    log.close()
    assert (tmp_path / "log").read_text() == "h\u00e9llo\n"
    assert c.exitstatus == 2 and c.ending.detail == "boom"
    ours.close()
    c.close()


def test_console_eof_when_the_connection_drops():
    d = FakeDaemon()
    d.out(b"partial")
    d.ours.close()
    d.console.expect("partial")
    with pytest.raises(pexpect.EOF, match="connection closed"):
        d.console.expect("more")
    assert d.console.ending is None


def test_xenstore_paths_are_relative_to_the_domain():
    xs = api.XenStore(host=None, home="/local/domain/7")
    assert xs.path("name") == "/local/domain/7/name"
    assert xs.path("/vm") == "/vm"
    assert xs.path("") == "/local/domain/7"
    assert api.XenStore(host=None).path("local") == "/local"


def test_an_unread_end_frame_is_found_without_the_daemon():
    """A guest that ended while nobody read its console: the end waits in
    the socket (the daemon may have exited since); wait() must not ask."""
    ours, theirs = socket.socketpair()
    host = types.SimpleNamespace(run_dir=Path("/nonexistent"))
    dom = api.Domain(host, {"name": "x", "domid": 3, "serial": 1})
    dom._set_console(api.ConsoleStream(theirs), timeout=2)
    ours.sendall(frame(b"D", b"Test result: SUCCESS\r\n") + end_frame("poweroff", 0))
    ours.close()
    assert dom.wait().reason == "poweroff"              # no request was made
    dom.console.expect("Test result: SUCCESS")          # the output is still there
    dom.console.close()
