"""netback with booted demo guests (their netfront and minimal IP stack):
two guests on the internal switch ping each other and echo UDP, a pcap
capture holds the ICMP frames, a spoofed source MAC goes nowhere, a guest
that posts no RX buffers only loses frames, hostile frontends are refused or
disconnected while the others carry on, vifs are hot-plugged, and the host
pings a guest through a TAP on a Linux bridge."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time

import pexpect
import pytest

from conftest import guest
from .demo_guest import PROMPT, boot, poweroff, run

from qemu_xenpv.devices.pcap import describe, read_pcap


def vif(ip, mac=None, **kw):
    spec = ",".join([f"ip={ip}"] + ([f"mac={mac}"] if mac else []) +
                    [f"{k}={v}" for k, v in kw.items()])
    return f"vif=['{spec}']"


def vifs(xenpv, name=None):
    args = ["network-list", "--json"] + ([name] if name else [])
    r = xenpv.run(*args, check=True)
    return json.loads(r.stdout)


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_guests_ping_udp_echo_pcap_and_antispoofing(xenpv):
    cap = xenpv.rundir / "a.pcap"
    a, name_a, _ = boot(xenpv, "a", vif("10.0.7.1", "00:16:3e:00:07:01"), "--pcap", cap)
    b, name_b, _ = boot(xenpv, "b", vif("10.0.7.2", "00:16:3e:00:07:02"))
    assert "ip 10.0.7.1/24 connected" in run(a, "ip show")

    out = run(a, "ping 10.0.7.2 3")
    assert "ping: 3/3 replies" in out, out
    out = run(b, "ping 10.0.7.1 2")
    assert "ping: 2/2 replies" in out, out
    out = run(a, "udp send 10.0.7.2 7 hello over netback")
    assert "udp: reply from 10.0.7.2 'hello over netback'" in out, out

    # a frame with a foreign source MAC is dropped by the switch
    before = run(b, "net stats")
    assert "net-spoof: sent" in run(a, "net spoof 10.0.7.2")
    time.sleep(0.3)
    after = run(b, "net stats")
    rx = lambda s: int(re.search(r"rx (\d+) pkts", s).group(1))
    assert rx(after) == rx(before), (before, after)
    va = [v for v in vifs(xenpv) if v["mac"] == "00:16:3e:00:07:01"][0]
    assert va["spoofed"] == 1 and va["state"] == 4

    # the capture: every ICMP frame of a's vif, both directions, readable as pcap
    frames = [describe(f) for f in read_pcap(str(cap))]
    req = [d for d in frames if "10.0.7.1 > 10.0.7.2 ICMP echo request" in d]
    rep = [d for d in frames if "10.0.7.2 > 10.0.7.1 ICMP echo reply" in d]
    assert len(req) >= 3 and len(rep) >= 3, frames
    assert any("10.0.7.2 > 10.0.7.1 ICMP echo request" in d for d in frames)   # b's ping
    assert any("ARP" in d for d in frames)
    assert any("00:16:3e:de:ad:01" in d for d in frames)    # what a sent, as it sent it
    tool = shutil.which("tshark") or shutil.which("tcpdump")
    if tool:
        r = subprocess.run([tool, "-n", "-r", str(cap)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and "10.0.7.2" in r.stdout and "ICMP" in r.stdout, r.stderr
    assert poweroff(a) == 0 and poweroff(b) == 0


def test_hostile_frontends_starved_rx_and_hot_plug(xenpv):
    a, name_a, _ = boot(xenpv, "a", vif("10.0.8.1"))
    b, name_b, _ = boot(xenpv, "b", vif("10.0.8.2"))
    c, name_c, _ = boot(xenpv, "c", vif("10.0.8.3"))

    # b stops posting RX buffers: frames for it are dropped, nobody waits
    assert "ping: 1/1 replies" in run(a, "ping 10.0.8.2 1")     # a knows b's MAC
    assert "net-hold: vif0 on" in run(b, "net hold on")
    out = run(a, "udp blast 10.0.8.2 9 1000 400")
    assert re.search(r"sent 400 of 400", out), out
    assert "ping: 1/1 replies" in run(a, "ping 10.0.8.3 1")
    vb = vifs(xenpv, name_b)[0]
    assert vb["rx_dropped"] > 0 and vb["state"] == 4
    run(b, "net hold off")
    assert "ping: 2/2 replies" in run(a, "ping 10.0.8.2 2")

    # errors the back end answers with NETIF_RSP_ERROR: a stays connected
    for kind, n in (("badgref", 1), ("shortframe", 1), ("manyslots", 30)):
        out = run(a, f"net evil {kind}")
        assert f"tx errors +{n}, last status -1, still connected" in out, out
    assert "ping: 1/1 replies" in run(a, "ping 10.0.8.2 1")

    # a slot crossing its page, then ring index garbage: a's vif is disconnected
    a.sendline("net evil bigslot")
    a.expect_exact("net-evil: bigslot: pushed")
    a.expect_exact("netfront: vif 0 disconnected", timeout=20)   # after its prompt
    va = vifs(xenpv, name_a)[0]
    assert va["state"] in (5, 6) and "crosses the page" in (va["error"] or ""), va
    assert "ping: 2/2 replies" in run(b, "ping 10.0.8.3 2")     # the others carry on

    # hot plug: a new vif for a, the broken one removed
    r = xenpv.run("network-attach", name_a, "ip=10.0.8.11", "mac=00:16:3e:00:08:11")
    assert r.returncode == 0, r.stderr
    assert "vif 1 attached" in r.stderr
    a.expect_exact("netfront: vif 1 connected", timeout=20)
    assert "ping: 2/2 replies" in run(a, "ping 10.0.8.3 2")
    r = xenpv.run("network-detach", name_a, "0")
    assert r.returncode == 0, r.stderr
    assert [v["devid"] for v in vifs(xenpv, name_a)] == [1]

    # ring index garbage on the new one, then detach it cleanly as well
    a.sendline("net evil ringgarbage 1")
    a.expect_exact("net-evil: ringgarbage: pushed")
    a.expect_exact("netfront: vif 1 disconnected", timeout=20)   # after its prompt
    assert "TX ring index garbage" in (vifs(xenpv, name_a)[0]["error"] or "")
    assert "ping: 1/1 replies" in run(c, "ping 10.0.8.2 1")
    assert xenpv.run("network-detach", name_a, "00:16:3e:00:08:11").returncode == 0
    assert vifs(xenpv, name_a) == []
    r = xenpv.run("network-detach", name_a, "5")
    assert r.returncode == 1 and "has no vif '5'" in r.stderr

    # a clean detach of a working vif: the frontend closes on request
    t0 = time.monotonic()
    assert xenpv.run("network-detach", name_c, "0").returncode == 0
    assert time.monotonic() - t0 < 8, "the frontend should close well before libxl's timeout"
    c.expect_exact("netfront: vif 0 disconnected")
    for x in (a, b, c):
        assert poweroff(x) == 0


def test_bad_network_config_is_one_line(xenpv):
    r = xenpv.run("create", guest("demo"), f"name={xenpv.name('bad')}", "vif=['mca=1']")
    assert r.returncode == 1 and "unknown key 'mca' (did you mean 'mac'?)" in r.stderr
    assert r.stderr.count("\n") == 1
    r = xenpv.run("create", guest("demo"), f"name={xenpv.name('bad')}",
                  "vif=['bridge=nosuchbr7']")
    assert r.returncode == 1 and "bridge 'nosuchbr7' does not exist" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = xenpv.run("create", guest("demo"), f"name={xenpv.name('bad')}", "--pcap", "/x.pcap")
    assert r.returncode == 1 and "--pcap: the domain has no vif" in r.stderr


# ---- the host through a TAP on a Linux bridge -------------------------------------
def _tap_unavailable():
    if os.geteuid() != 0:
        return "TAP needs root (CAP_NET_ADMIN); not root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if not shutil.which("ip"):
        return "iproute2's 'ip' is not installed (needed to make the test bridge)"
    return None


def _icmp_checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def host_ping(ip: str, count: int = 3, timeout: float = 2.0) -> list:
    """ICMP echo from the host's own stack (a raw socket, as ping does)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    rtts = []
    ident = random.randrange(65536)
    try:
        for seq in range(count):
            body = b"qemu-xenpv host ping"
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            hdr = struct.pack("!BBHHH", 8, 0, _icmp_checksum(hdr + body), ident, seq)
            t0 = time.monotonic()
            s.sendto(hdr + body, (ip, 0))
            try:
                while True:
                    data, addr = s.recvfrom(2048)
                    ihl = (data[0] & 15) * 4
                    if addr[0] == ip and data[ihl] == 0 and \
                            struct.unpack_from("!HH", data, ihl + 4) == (ident, seq):
                        rtts.append(time.monotonic() - t0)
                        break
            except socket.timeout:
                pass
    finally:
        s.close()
    return rtts


@pytest.fixture
def host_bridge(xenpv):
    why = _tap_unavailable()
    if why:
        pytest.skip(why)
    br = "xpb" + xenpv.tag[1:9]
    net = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    cmds = [f"ip link add {br} type bridge", f"ip addr add {net}.1/24 dev {br}",
            f"ip link set {br} up"]
    for c in cmds:
        r = subprocess.run(c.split(), capture_output=True, text=True)
        if r.returncode:
            subprocess.run(["ip", "link", "del", br], capture_output=True)
            pytest.skip(f"cannot make a test bridge ({c}: {r.stderr.strip()})")
    try:
        yield br, net
    finally:
        subprocess.run(["ip", "link", "del", br], capture_output=True)


def test_host_pings_a_guest_through_a_tap_bridge(xenpv, host_bridge):
    br, net = host_bridge
    a, name_a, domid = boot(xenpv, "a", vif(f"{net}.2", bridge=br))
    ports = os.listdir(f"/sys/class/net/{br}/brif")
    assert len(ports) == 1 and ports[0].startswith("xpv"), ports
    tap = ports[0]

    rtts = host_ping(f"{net}.2", 3)
    assert len(rtts) == 3, "the host's pings got no reply through the bridge"
    out = run(a, f"ping {net}.1 2")
    assert "ping: 2/2 replies" in out, out
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    u.sendto(b"to the guest and back", (f"{net}.2", 7))
    assert u.recvfrom(100)[0] == b"to the guest and back"
    u.close()

    # a second guest on the same bridge: one TAP for both, guest <-> guest stays inside
    b, name_b, _ = boot(xenpv, "b", vif(f"{net}.3", bridge=br))
    assert os.listdir(f"/sys/class/net/{br}/brif") == [tap]
    assert "ping: 1/1 replies" in run(b, f"ping {net}.2 1")
    assert len(host_ping(f"{net}.3", 1)) == 1
    assert poweroff(a) == 0
    assert os.listdir(f"/sys/class/net/{br}/brif") == [tap]     # b still uses it
    assert poweroff(b) == 0
    wait_until(lambda: not os.path.exists(f"/sys/class/net/{tap}"), 10,
               "the TAP device to go with the last domain")
