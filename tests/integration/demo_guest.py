"""Helpers for tests that drive demo guests on their consoles (pexpect) and
the daemon's XenStore, as a user would."""

from __future__ import annotations

import re

import pexpect

from conftest import guest

PROMPT = "demo> "


def boot(xenpv, base: str = "demo", *extra, cfg: str = "demo"):
    """create -c a guest; (pexpect child, name, domid) at its first prompt."""
    name = xenpv.name(base)
    c = xenpv.spawn("create", "-c", guest(cfg), f"name={name}", *extra)
    c.expect(r"Started domain \S+ \(id=(\d+)\)")
    domid = int(c.match.group(1))
    if cfg == "demo":
        c.expect_exact(PROMPT)
    return c, name, domid


def run(c, command: str, timeout: float = 30) -> str:
    """Type a command at the prompt; its output (between echo and next prompt)."""
    c.sendline(command)
    c.expect_exact(command, timeout=timeout)
    c.expect_exact(PROMPT, timeout=timeout)
    return c.before.decode(errors="replace").replace("\r\n", "\n").strip("\n")


def poweroff(c) -> int:
    c.sendline("poweroff")
    c.expect(pexpect.EOF)
    c.close()
    return c.exitstatus


def xs(xenpv, *args, check: bool = True) -> str:
    r = xenpv.run(*args, check=check)
    return r.stdout


def find(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return m.group(1)
