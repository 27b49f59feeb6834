"""`make bench`: the figures behind our speed goals, each printed with the
baseline measured in the same run and the goal it is held to.

  floor           QEMU launch -> the shim alone initialised and halted
  boot-to-prompt  QEMU launch -> the demo guest's "demo> " prompt
  null hypercall  guest-measured round trip of xen_version(XENVER_version),
                  for each doorbell design (ivshmem, an I/O-port debugcon,
                  pure polling)
  plumbing        XenStore read, event channel ping-pong guest<->guest and
                  guest<->domain 0, grant copy throughput (bench_plumbing.py)
  network         ping RTT and UDP throughput guest<->guest and guest->host
                  (TAP) against host loopback sockets (bench_net.py)
  block           blkfront sequential read/write MB/s and 4 KiB random read IOPS
                  against Python doing the same I/O on the image (bench_block.py)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from typing import Dict, List, Optional

from . import paths
from .config import load_config_file
from .hypervisor import Hypervisor
from .machine import accel as accel_mod
from .selftest import boot_shim_alone

GOAL_NULL_MEDIAN_US = 10.0
GOAL_NULL_P99_US = 20.0
GOAL_BOOT_RATIO = 1.3


def _boot_to(hv: Hypervisor, cfg_path: str, pattern: bytes, accel: str, doorbell: str = "ivshmem",
             extra: Optional[Dict] = None, timeout: float = 60.0):
    """Create a domain, return (seconds from QEMU launch to `pattern`, console text)."""
    cfg = load_config_file(cfg_path, extra or {})
    cfg.load_images()

    async def run():
        seen = asyncio.Event()
        buf = bytearray()
        t_seen = [0.0]

        dom = await hv.create_domain(cfg, accel=accel, doorbell=doorbell)

        def sink(data: bytes) -> None:
            buf.extend(data)
            if not seen.is_set() and pattern in buf:
                t_seen[0] = time.monotonic()
                seen.set()
        if dom.console.history:
            sink(bytes(dom.console.history))
        dom.console.add_sink(sink)
        try:
            await asyncio.wait_for(seen.wait(), timeout)
        finally:
            await dom.destroy("destroyed")
        return t_seen[0] - dom.boot_t0, buf.decode(errors="replace")
    return hv.run(run())


def measure(accel: str, runs: int) -> Dict[str, object]:
    res: Dict[str, object] = {"accel": accel}
    hv = Hypervisor()
    try:
        floor = [boot_shim_alone(accel) for _ in range(runs)]
        demo = str(paths.guest_images_dir() / "demo.cfg")
        boot = [_boot_to(hv, demo, b"demo> ", accel)[0] for _ in range(runs)]
        res["floor"] = statistics.median(floor)
        res["boot"] = statistics.median(boot)
        bench = str(paths.guest_images_dir() / "bench.cfg")
        for db in ("ivshmem", "port", "poll"):
            meds, p99s = [], []
            extra: Dict[str, List[float]] = {}
            for _ in range(max(1, runs // 2)):
                _, text = _boot_to(hv, bench, b"bench: done", accel, doorbell=db)
                m = re.search(r"null-hypercall .*median_ns=(\d+) p99_ns=(\d+)", text)
                meds.append(int(m.group(1)) / 1000)
                p99s.append(int(m.group(2)) / 1000)
                for name, key in (("pagefault-bounce", "median_ns"),
                                  ("upcall-latency", "median_ns"),
                                  ("mmu-update-512", "per_entry_ns")):
                    mm = re.search(name + r" .*" + key + r"=(\d+)", text)
                    if mm:
                        extra.setdefault(name, []).append(int(mm.group(1)) / 1000)
            res[f"null_{db}"] = (statistics.median(meds), statistics.median(p99s))
            if db == "ivshmem":
                res["extra"] = {k: statistics.median(v) for k, v in extra.items()}
        from . import bench_plumbing                # XenStore, event channels, grants
        res.update(bench_plumbing.measure(hv, accel))
        from . import bench_net                     # netback: ping, UDP throughput
        res.update(bench_net.measure(hv, accel))
        from . import bench_block                   # blkback: throughput, IOPS
        res.update(bench_block.measure(hv, accel))
    finally:
        hv.shutdown()
    return res


def table(res: Dict[str, object]) -> List[str]:
    a = res["accel"]
    rows = [f"{'benchmark (' + a + ')':<44} {'value':>10} {'baseline':>18} {'ratio':>7}  goal"]
    rows.append("-" * 96)
    floor, boot = res["floor"], res["boot"]
    rows.append(f"{'shim alone, launch to halt (the floor)':<44} {floor * 1000:>8.1f}ms "
                f"{'':>18} {'':>7}")
    ratio = boot / floor
    rows.append(f"{'demo guest, launch to prompt':<44} {boot * 1000:>8.1f}ms "
                f"{'floor ' + format(floor * 1000, '.1f') + 'ms':>18} {ratio:>6.2f}x  "
                f"<= {GOAL_BOOT_RATIO}x {'ok' if ratio <= GOAL_BOOT_RATIO else 'MISSED'}")
    base = res["null_poll"][0]
    for db, label in (("ivshmem", "ivshmem-doorbell (chosen)"), ("port", "debugcon outb"),
                      ("poll", "pure polling")):
        med, p99 = res[f"null_{db}"]
        ok = med <= GOAL_NULL_MEDIAN_US and p99 <= GOAL_NULL_P99_US
        rows.append(f"{'null hypercall median, ' + label:<44} {med:>8.2f}us "
                    f"{'polling ' + format(base, '.2f') + 'us':>18} {med / base:>6.2f}x  "
                    f"<= {GOAL_NULL_MEDIAN_US:.0f}us {'ok' if med <= GOAL_NULL_MEDIAN_US else 'MISSED'}")
        rows.append(f"{'null hypercall p99,    ' + label:<44} {p99:>8.2f}us "
                    f"{'':>18} {'':>7}  <= {GOAL_NULL_P99_US:.0f}us "
                    f"{'ok' if p99 <= GOAL_NULL_P99_US else 'MISSED'}")
    null = res["null_ivshmem"][0]
    for name, label in (("pagefault-bounce", "#PF bounce round trip"),
                        ("upcall-latency", "event upcall latency (send to handler)"),
                        ("mmu-update-512", "mmu_update, 512-entry batch, per entry")):
        v = res.get("extra", {}).get(name)
        if v is not None:
            rows.append(f"{label:<44} {v:>8.2f}us {'null hypercall ' + format(null, '.2f') + 'us':>18} "
                        f"{v / null:>6.2f}x")
    from . import bench_plumbing
    from . import bench_net
    from . import bench_block
    return rows + bench_plumbing.rows(res) + bench_net.rows(res) + bench_block.rows(res)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qemu_xenpv.bench")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--accel", action="append", choices=("tcg", "kvm"))
    args = ap.parse_args(argv)
    accels = args.accel or ["tcg", "kvm"]
    print(f"qemu-xenpv benchmarks: {args.runs} runs each, medians; {time.strftime('%Y-%m-%d %H:%M')}")
    for a in accels:
        if a == "kvm":
            ok, why = accel_mod.kvm_hardware_backed()
            if not ok:
                print(f"\nkvm: skipped ({why})")
                continue
        res = measure(a, args.runs)
        print()
        for row in table(res):
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
