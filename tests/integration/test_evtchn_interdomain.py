"""Two guests in one qemu-xenpv daemon bind an inter-domain event channel
and ping each other; the binding rules are Xen's."""

import re

import pexpect

from .demo_guest import PROMPT, boot, poweroff, run


def test_two_guests_ping_each_other(xenpv):
    a, _, da = boot(xenpv, "a")
    b, _, db = boot(xenpv, "b")
    a.sendline(f"evtchn-listen {db} 5")
    a.expect(rf"evtchn-listen: port (\d+) for domain {db}")
    port = int(a.match.group(1))
    out = run(b, f"evtchn-ping {da} {port} 5")
    pongs = re.findall(r"evtchn-ping: pong (\d+) after (\d+) us", out)
    assert [int(n) for n, _ in pongs] == [1, 2, 3, 4, 5], out
    assert "evtchn-ping: done" in out
    for i in range(1, 6):
        a.expect_exact(f"evtchn-listen: ping {i}, pong sent")
    a.expect_exact("evtchn-listen: done")
    a.expect_exact(PROMPT)
    # both ends closed: the port can be bound no more
    assert "bind_interdomain failed: -22" in run(b, f"evtchn-ping {da} {port}")
    assert poweroff(a) == 0 and poweroff(b) == 0


def test_binding_follows_xens_rules(xenpv):
    a, name_a, da = boot(xenpv, "a")
    b, _, db = boot(xenpv, "b")
    a.sendline(f"evtchn-listen {da + db + 7}")          # offered to another domain
    a.expect(r"evtchn-listen: port (\d+)")
    port = int(a.match.group(1))
    assert "bind_interdomain failed: -22" in run(b, f"evtchn-ping {da} {port}")
    assert "bind_interdomain failed: -22" in run(b, f"evtchn-ping {da} 1000")
    assert "bind_interdomain failed: -3" in run(b, "evtchn-ping 4321 5")   # -ESRCH
    assert poweroff(b) == 0
    assert xenpv.run("destroy", name_a).returncode == 0
    a.expect(pexpect.EOF)


def test_peer_going_away_unbinds_the_channel(xenpv):
    a, name_a, da = boot(xenpv, "a")
    b, _, db = boot(xenpv, "b")
    a.sendline(f"evtchn-listen {db} 100000")
    a.expect(r"evtchn-listen: port (\d+)")
    port = int(a.match.group(1))
    b.sendline(f"evtchn-ping {da} {port} 100000")
    b.expect_exact("evtchn-ping: pong 20 after")
    assert xenpv.run("destroy", name_a).returncode == 0    # a dies mid-conversation
    b.expect_exact("evtchn-ping: timeout", timeout=60)     # b's sends now go nowhere
    b.expect_exact(PROMPT)
    assert run(b, "echo alive") == "alive"
    assert poweroff(b) == 0
    a.expect(pexpect.EOF)
