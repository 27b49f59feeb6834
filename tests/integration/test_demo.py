"""The demo guest, driven on its console as a user would."""

import re
import time

import pexpect
import pytest

from conftest import guest, qemu_pids


def boot_demo(xenpv, *extra):
    name = xenpv.name("demo")
    c = xenpv.spawn("create", "-c", guest("demo"), f"name={name}", *extra)
    c.expect(r"Started domain (\S+) \(id=(\d+)\)")
    c.expect("qemu-xenpv demo guest")
    c.expect(r"Xen version (\d+)\.(\d+)")
    assert int(c.match.group(1)) >= 3
    c.expect(r"Time: wallclock (\d+)\.\d+ s, system time (\d+) ns")
    wall = int(c.match.group(1))
    assert abs(wall - time.time()) < 120, "wall clock from shared_info is wrong"
    c.expect_exact("demo> ")
    return c, name


def test_banner_prompt_command_poweroff(xenpv):
    c, name = boot_demo(xenpv)
    c.sendline("echo hello from the test")
    c.expect("hello from the test\r?\n")
    c.expect_exact("demo> ")
    c.sendline("uptime")
    c.expect(r"up (\d+)\.(\d+) s")
    c.expect_exact("demo> ")
    c.sendline("poweroff")
    c.expect("Powering off.")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
    assert not qemu_pids(xenpv.tag)


def test_time_advances_with_the_host(xenpv):
    c, name = boot_demo(xenpv)
    c.sendline("uptime")
    c.expect(r"up (\d+\.\d+) s")
    t0, g0 = time.monotonic(), float(c.match.group(1))
    c.expect_exact("demo> ")
    time.sleep(1.0)
    c.sendline("uptime")
    c.expect(r"up (\d+\.\d+) s")
    t1, g1 = time.monotonic(), float(c.match.group(1))
    assert 0.8 < (g1 - g0) < (t1 - t0) + 0.3
    c.sendline("poweroff")
    c.expect(pexpect.EOF)


def test_crash_gives_crash_exit_code(xenpv):
    c, name = boot_demo(xenpv)
    c.sendline("crash")
    c.expect("Crashing the guest")
    c.expect(pexpect.EOF)
    out = c.before.decode(errors="replace")
    c.close()
    assert c.exitstatus == 2
    assert "crashed" in out
    assert "cmd_crash" in out, "the guest's own fault report names the function"


def test_destroy_from_another_shell(xenpv):
    c, name = boot_demo(xenpv)
    r = xenpv.run("list")
    assert name in r.stdout
    r = xenpv.run("destroy", name)
    assert r.returncode == 0, r.stderr
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 4
    assert name not in xenpv.run("list").stdout


def test_background_create_console_detach_and_list(xenpv):
    name = xenpv.name("demo")
    r = xenpv.run("create", guest("demo"), f"name={name}")
    assert r.returncode == 0, r.stderr
    assert "accel tcg" in r.stderr or "accel kvm" in r.stderr
    lst = xenpv.run("list").stdout
    row = next(l for l in lst.splitlines() if l.startswith(name))
    assert row.split()[-1] in ("tcg", "kvm")
    c = xenpv.spawn("console", name)
    c.expect_exact("demo> ")             # history replay shows the boot
    c.sendline("echo attached")
    c.expect("attached\r?\n")
    c.sendcontrol("]")                   # Ctrl-] detaches, the guest keeps running
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
    assert name in xenpv.run("list").stdout
    assert xenpv.run("destroy", name).returncode == 0


def test_pause_unpause(xenpv):
    name = xenpv.name("demo")
    assert xenpv.run("create", guest("demo"), f"name={name}").returncode == 0
    c = xenpv.spawn("console", name)
    c.expect_exact("demo> ")
    assert xenpv.run("pause", name).returncode == 0
    row = next(l for l in xenpv.run("list").stdout.splitlines() if l.startswith(name))
    assert "p" in row.split()[4]
    c.sendline("echo while paused")
    with pytest.raises(pexpect.TIMEOUT):
        c.expect("while paused\r?\n", timeout=1.5)
    assert xenpv.run("unpause", name).returncode == 0
    c.expect("while paused\r?\n", timeout=20)
    c.sendcontrol("]")
    c.expect(pexpect.EOF)
    assert xenpv.run("destroy", name).returncode == 0


def test_tcp_console_port(xenpv):
    import socket
    name = xenpv.name("demo")
    r = xenpv.run("create", guest("demo"), f"name={name}")
    port = int(re.search(r"console on port (\d+)", r.stderr).group(1))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"echo over tcp\r")
    buf = b""
    deadline = time.time() + 20
    while b"over tcp\r\n" not in buf and time.time() < deadline:
        buf += s.recv(4096)
    s.close()
    assert b"over tcp\r\n" in buf
    assert xenpv.run("destroy", name).returncode == 0


def test_scrambled_p2m_boots(xenpv):
    c, name = boot_demo(xenpv, "--scramble-p2m")
    c.sendline("echo scrambled")
    c.expect("scrambled\r?\n")
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


def test_trace_hypercalls(xenpv, tmp_path):
    import json
    trace = tmp_path / "trace.jsonl"
    c, name = boot_demo(xenpv, "--trace-hypercalls", trace)
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
    recs = [json.loads(l) for l in trace.read_text().splitlines()]
    names = {r["hypercall"] for r in recs}
    assert {"set_trap_table", "callback_op", "update_va_mapping", "event_channel_op",
            "sched_op"} <= names
    assert all({"t", "domain", "vcpu", "hypercall", "args", "result"} <= r.keys() for r in recs)
    assert recs[-1]["hypercall"] == "sched_op" and recs[-1]["args"][0] == "0x2"
