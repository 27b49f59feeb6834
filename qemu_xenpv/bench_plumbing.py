"""`make bench` rows for the inter-domain plumbing (issue 4), measured with
two demo guests booted by the benchmark's hypervisor:

  xenstore read   guest-measured round trip of XS_READ "domid" (xs-bench)
  evtchn          guest-measured ping-pong round trip over an inter-domain
                  channel, guest <-> guest and guest <-> domain 0 (whose end
                  answers from its event-channel callback); one way is ~half
  grant copy      domain 0 copying a 4 KiB page a guest granted it
                  (GrantEngine.copy_from_grant), against a plain Python copy
                  of the same bytes from the same RAM
"""

from __future__ import annotations

import re
import threading
import time
from typing import Dict, List

from . import paths
from .config import load_config_file

SAMPLES = 500


class _Guest:
    """A demo guest of `hv`, driven on its console."""

    def __init__(self, hv, name: str, accel: str):
        self.hv = hv
        self.buf = bytearray()
        self.cond = threading.Condition()
        cfg = load_config_file(str(paths.guest_images_dir() / "demo.cfg"), {"name": name})
        cfg.load_images()
        self.dom = hv.run(hv.create_domain(cfg, accel=accel), timeout=60)
        hv.run(self._attach(), timeout=10)
        self.expect(r"demo> ")

    async def _attach(self):
        self._sink(bytes(self.dom.console.history))
        self.dom.console.add_sink(self._sink)

    def _sink(self, data: bytes) -> None:
        with self.cond:
            self.buf += data
            self.cond.notify_all()

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = re.search(pattern.encode(), bytes(self.buf))
                if m:
                    del self.buf[:m.end()]
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{pattern!r} not seen: {bytes(self.buf[-200:])!r}")
                self.cond.wait(left)

    def send(self, line: str) -> None:
        self.dom.console.write_input(line.encode() + b"\r")

    def close(self) -> None:
        self.hv.run(self.dom.destroy("destroyed"), timeout=30)


def _stats(m: re.Match) -> tuple:
    return int(m.group(1)) / 1000, int(m.group(2)) / 1000


def measure(hv, accel: str) -> Dict[str, object]:
    res: Dict[str, object] = {}
    a = _Guest(hv, "bench-plumbing-a", accel)
    b = _Guest(hv, "bench-plumbing-b", accel)
    try:
        da, db = a.dom.domid, b.dom.domid
        a.send(f"xs-bench {SAMPLES}")
        res["xs_read"] = _stats(a.expect(r"median_ns=(\d+) p99_ns=(\d+)"))

        a.send(f"evtchn-listen {db} {SAMPLES} q")
        port = int(a.expect(r"evtchn-listen: port (\d+)").group(1))
        b.send(f"evtchn-ping {da} {port} {SAMPLES} q")
        res["evtchn_guest"] = _stats(b.expect(r"median_ns=(\d+) p99_ns=(\d+)"))
        a.expect("evtchn-listen: done")

        ev = hv.dom0.evtchn

        def echo(p: int) -> None:
            with hv.lock:
                ev.send(p)
        with hv.lock:
            port0 = ev.dom0_alloc(da, echo)
        a.send(f"evtchn-ping 0 {port0} {SAMPLES} q")
        res["evtchn_dom0"] = _stats(a.expect(r"median_ns=(\d+) p99_ns=(\d+)"))
        with hv.lock:
            ev.close(port0)

        a.send("gnt-share 0 bench")
        ref = int(a.expect(r"gnt-share: ref (\d+)").group(1))
        n, rounds = 4096, 2000
        with hv.lock:
            t0 = time.perf_counter()
            for _ in range(rounds):
                hv.grants.copy_from_grant(da, ref, 0, n)
            t_grant = time.perf_counter() - t0
            m = hv.grants.map_grant_ref(da, ref, readonly=True)
            view = m.view
            t0 = time.perf_counter()
            for _ in range(rounds):
                bytes(view[0:n])
            t_plain = time.perf_counter() - t0
            del view
            hv.grants.unmap_grant_ref(m)
        res["gnt_copy"] = (n * rounds / t_grant / 1e6, n * rounds / t_plain / 1e6)
    finally:
        for g in (a, b):
            try:
                g.close()
            except Exception:
                pass
    return res


def rows(res: Dict[str, object]) -> List[str]:
    out = []
    if "xs_read" not in res:
        return out
    for key, label in (("xs_read", "xenstore read round trip, guest"),
                       ("evtchn_guest", "evtchn ping-pong, guest <-> guest"),
                       ("evtchn_dom0", "evtchn ping-pong, guest <-> domain 0")):
        med, p99 = res[key]
        out.append(f"{label:<44} {med:>8.1f}us {'p99 ' + format(p99, '.1f') + 'us':>18} "
                   f"{'':>7}  (one way ~{med / 2:.1f}us)" if key != "xs_read" else
                   f"{label:<44} {med:>8.1f}us {'p99 ' + format(p99, '.1f') + 'us':>18}")
    grant, plain = res["gnt_copy"]
    out.append(f"{'grant copy 4 KiB to domain 0':<44} {grant:>7.0f}MB/s "
               f"{'plain copy ' + format(plain, '.0f') + 'MB/s':>18} {grant / plain:>6.2f}x")
    return out
