"""`make bench` rows for the network (netback, issue 5), measured with demo
guests booted by the benchmark's hypervisor, each against a baseline taken
in the same run:

  ping RTT        guest-measured ICMP echo round trip, guest <-> guest (and
                  host -> guest through a TAP when root can make a bridge),
                  against a UDP round trip between two host sockets on
                  loopback (the host's own stack, Python on both ends)
  UDP throughput  `udp blast` of 1472-byte datagrams (and 64-byte ones for
                  packets/s), counted by the receiver (guest: `udp stats`,
                  host: a socket); against the same datagrams sent from one
                  Python socket to another over loopback

The same guest cannot be booted by plain QEMU with an emulated NIC: it is a
Xen PV kernel whose only network driver is netfront (there is no e1000 or
virtio driver in it), so that comparison does not apply.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
from typing import Dict, List, Optional

from .bench_plumbing import _Guest
from . import paths
from .config import load_config_file

PINGS = 30
BLAST = 3000


class _NetGuest(_Guest):
    def __init__(self, hv, name: str, accel: str, vif: str):
        self.hv = hv
        self.buf = bytearray()
        self.cond = threading.Condition()
        cfg = load_config_file(str(paths.guest_images_dir() / "demo.cfg"),
                               {"name": name, "vif": [vif]})
        cfg.load_images()
        self.dom = hv.run(hv.create_domain(cfg, accel=accel), timeout=60)
        hv.run(self._attach(), timeout=10)
        self.expect(r"demo> ")

    def cmd(self, line: str, until: str, timeout: float = 120) -> re.Match:
        self.send(line)
        return self.expect(until, timeout)


def _ping_rtts(g: _NetGuest, ip: str, n: int) -> List[float]:
    g.send(f"ping {ip} {n}")
    out = g.expect(r"(?s)(.*?)ping: \d+/\d+ replies", 120)
    return [int(x) for x in re.findall(rb"time (\d+) us", out.group(1))]


def _loopback_rtt(n: int) -> float:
    """Median µs of a UDP echo round trip between two Python sockets."""
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), \
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def echo():
        b.settimeout(0.2)
        while not stop.is_set():
            try:
                d, addr = b.recvfrom(2048)
                b.sendto(d, addr)
            except socket.timeout:
                pass
    t = threading.Thread(target=echo, daemon=True)
    t.start()
    rtts = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            a.sendto(b"x" * 56, b.getsockname())
            a.recvfrom(2048)
            rtts.append((time.perf_counter() - t0) * 1e6)
    finally:
        stop.set()
        t.join()
        a.close()
        b.close()
    return statistics.median(rtts)


def _loopback_udp(size: int, count: int) -> tuple:
    """(Mbit/s, packets/s) of `count` datagrams Python -> Python on loopback,
    counted by the receiver."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    got = [0, 0.0, 0.0]

    def recv():
        while True:
            try:
                rx.recv(2048)
            except socket.timeout:
                return
            now = time.perf_counter()
            if not got[0]:
                got[1] = now
            got[2] = now
            got[0] += 1
    t = threading.Thread(target=recv, daemon=True)
    t.start()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = b"\xa5" * size
    for _ in range(count):
        tx.sendto(data, rx.getsockname())
    t.join()
    tx.close()
    rx.close()
    span = max(got[2] - got[1], 1e-6)
    return got[0] * size * 8 / span / 1e6, got[0] / span


def _guest_udp(tx: _NetGuest, rx: _NetGuest, ip: str, size: int, count: int) -> tuple:
    rx.cmd("udp stats reset", r"udp-stats: .*\n")
    tx.cmd(f"udp blast {ip} 9 {size} {count}", r"udp-blast: sent .*\n", 300)
    time.sleep(0.3)
    m = rx.cmd("udp stats", r"udp-stats: packets (\d+) bytes (\d+) span (\d+) us")
    pk, by, us = int(m.group(1)), int(m.group(2)), max(int(m.group(3)), 1)
    return by * 8 / us, pk / (us / 1e6), pk / count


def _bridge() -> Optional[tuple]:
    if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/dev/net/tun"):
        return None
    br = f"xpvbench{random.randrange(100)}"
    net = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    for c in (f"ip link add {br} type bridge", f"ip addr add {net}.1/24 dev {br}",
              f"ip link set {br} up"):
        if subprocess.run(c.split(), capture_output=True).returncode:
            subprocess.run(["ip", "link", "del", br], capture_output=True)
            return None
    return br, net


def _host_udp(g: _NetGuest, net: str, size: int, count: int) -> tuple:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind((f"{net}.1", 0))
    rx.settimeout(1.0)
    port = rx.getsockname()[1]
    got = [0, 0.0, 0.0]

    def recv():
        while True:
            try:
                rx.recv(2048)
            except socket.timeout:
                return
            now = time.perf_counter()
            if not got[0]:
                got[1] = now
            got[2] = now
            got[0] += 1
    t = threading.Thread(target=recv, daemon=True)
    t.start()
    g.cmd(f"udp blast {net}.1 {port} {size} {count}", r"udp-blast: sent .*\n", 300)
    t.join()
    rx.close()
    span = max(got[2] - got[1], 1e-6)
    return got[0] * size * 8 / span / 1e6, got[0] / span, got[0] / count


def measure(hv, accel: str) -> Dict[str, object]:
    res: Dict[str, object] = {}
    a = _NetGuest(hv, "bench-net-a", accel, "ip=10.0.99.1")
    b = _NetGuest(hv, "bench-net-b", accel, "ip=10.0.99.2")
    try:
        _ping_rtts(a, "10.0.99.2", 2)                       # ARP, warm up
        res["net_ping_gg"] = statistics.median(_ping_rtts(a, "10.0.99.2", PINGS))
        res["net_ping_base"] = _loopback_rtt(PINGS * 10)
        res["net_udp_gg"] = _guest_udp(a, b, "10.0.99.2", 1472, BLAST)
        res["net_udp_gg_small"] = _guest_udp(a, b, "10.0.99.2", 64, BLAST)
        res["net_udp_base"] = _loopback_udp(1472, BLAST * 10)
        res["net_udp_base_small"] = _loopback_udp(64, BLAST * 10)
    finally:
        for g in (a, b):
            try:
                g.close()
            except Exception:
                pass
    br = _bridge()
    if br is None:
        res["net_host"] = None
        return res
    name, net = br
    try:
        h = _NetGuest(hv, "bench-net-h", accel, f"ip={net}.2,bridge={name}")
        try:
            _ping_rtts(h, f"{net}.1", 2)
            res["net_ping_gh"] = statistics.median(_ping_rtts(h, f"{net}.1", PINGS))
            res["net_udp_gh"] = _host_udp(h, net, 1472, BLAST)
            res["net_host"] = True
        finally:
            h.close()
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    return res


def rows(res: Dict[str, object]) -> List[str]:
    if "net_ping_gg" not in res:
        return []
    out = []
    base_rtt = res["net_ping_base"]
    lab = lambda s: f"{s:<44}"
    out.append(f"{lab('ping RTT, guest <-> guest (internal switch)')} {res['net_ping_gg']:>8.0f}us "
               f"{'loopback ' + format(base_rtt, '.0f') + 'us':>18} "
               f"{res['net_ping_gg'] / base_rtt:>6.1f}x")
    if res.get("net_host"):
        out.append(f"{lab('ping RTT, guest -> host (TAP bridge)')} {res['net_ping_gh']:>8.0f}us "
                   f"{'loopback ' + format(base_rtt, '.0f') + 'us':>18} "
                   f"{res['net_ping_gh'] / base_rtt:>6.1f}x")
    bm, bp = res["net_udp_base"]
    sm, sp = res["net_udp_base_small"]
    mb, pps, ok = res["net_udp_gg"]
    out.append(f"{lab('UDP 1472 B, guest -> guest, Mbit/s')} {mb:>6.1f}Mb/s "
               f"{'loopback ' + format(bm, '.0f') + 'Mb/s':>18} {mb / bm:>6.3f}x  "
               f"({pps:.0f} pkt/s, {ok * 100:.0f}% delivered)")
    mb2, pps2, ok2 = res["net_udp_gg_small"]
    out.append(f"{lab('UDP 64 B, guest -> guest, packets/s')} {pps2:>6.0f}pk/s "
               f"{'loopback ' + format(sp, '.0f') + 'pk/s':>18} {pps2 / sp:>6.3f}x  "
               f"({mb2:.1f} Mbit/s, {ok2 * 100:.0f}% delivered)")
    if res.get("net_host"):
        hm, hp, hok = res["net_udp_gh"]
        out.append(f"{lab('UDP 1472 B, guest -> host (TAP), Mbit/s')} {hm:>6.1f}Mb/s "
                   f"{'loopback ' + format(bm, '.0f') + 'Mb/s':>18} {hm / bm:>6.3f}x  "
                   f"({hp:.0f} pkt/s, {hok * 100:.0f}% delivered)")
    else:
        out.append("guest <-> host rows: skipped (needs root, iproute2 and /dev/net/tun "
                   "for a TAP bridge)")
    return out
