"""gdb attaches to a guest through QEMU's gdbstub; symbols come from the
guest's own ELF."""

import shutil
import socket
import subprocess

import pexpect
import pytest

from conftest import GUESTS, guest

pytestmark = pytest.mark.skipif(not shutil.which("gdb"), reason="gdb not installed")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_breakpoint_on_a_guest_function(xenpv):
    port = free_port()
    name = xenpv.name("demo")
    c = xenpv.spawn("create", "-c", "--gdb", port, guest("demo"), f"name={name}")
    c.expect(f"gdb on port {port}")
    gdb = subprocess.Popen(
        ["gdb", "-batch", "-nx", str(GUESTS / "build" / "demo.elf"),
         "-ex", f"target remote 127.0.0.1:{port}",
         "-ex", "break cmd_echo", "-ex", "continue", "-ex", "bt", "-ex", "detach"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        c.expect_exact("demo> ", timeout=60)        # gdb continued the guest
        c.sendline("echo from gdb test")
        out, _ = gdb.communicate(timeout=60)
    finally:
        if gdb.poll() is None:
            gdb.kill()
    assert "Breakpoint 1, cmd_echo" in out, out
    bt = out[out.index("Breakpoint 1"):]
    assert "#0" in bt and "cmd_echo" in bt and "main" in bt, out
    c.expect("from gdb test\r?\n", timeout=30)       # detached: the guest runs on
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
