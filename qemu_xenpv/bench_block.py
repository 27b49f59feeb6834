"""`make bench` rows for blkback (issue 5), with a demo guest booted by the
benchmark's hypervisor on a 64 MiB raw image (and a qcow2 one when
qemu-img and qemu-storage-daemon are installed):

  sequential read / write   guest-measured (blk-bench: 256 KiB transfers, one
                            indirect request each; the write ends with a
                            flush), against Python doing the same transfers
                            on the same image (os.preadv / os.pwritev into a
                            256 KiB buffer, fdatasync at the end)
  4 KiB random read IOPS    one request at a time, against os.preadv of 4 KiB
                            at the same kind of random offsets
  persistent grants off     the sequential read again with feature-persistent
                            refused by the frontend (every page mapped and
                            unmapped per request): why persistent grants are on
  qcow2 sequential read     through qemu-storage-daemon's NBD export

Both sides read from the host's page cache (the image was just written),
so the figures compare the paths, not the disk.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from typing import Dict, List

from . import paths
from .config import load_config_file

MIB = 32                    # per sequential run
RAND = 2000                 # random reads per run
CHUNK = 256 * 1024          # the guest's transfer size (its buffer pool)
IMAGE_MIB = 64


def _python_baseline(path: str) -> Dict[str, float]:
    fd = os.open(path, os.O_RDWR)
    try:
        buf = memoryview(bytearray(CHUNK))
        total = MIB << 20
        t0 = time.perf_counter()
        for off in range(0, total, CHUNK):
            os.preadv(fd, [buf], off)
        read = total / (time.perf_counter() - t0) / 1e6
        t0 = time.perf_counter()
        for off in range(0, total, CHUNK):
            os.pwritev(fd, [buf], off)
        os.fdatasync(fd)
        write = total / (time.perf_counter() - t0) / 1e6
        small = memoryview(bytearray(4096))
        slots = (IMAGE_MIB << 20) // 4096
        rng = random.Random(1)
        offs = [rng.randrange(slots) * 4096 for _ in range(RAND)]
        t0 = time.perf_counter()
        for off in offs:
            os.preadv(fd, [small], off)
        iops = RAND / (time.perf_counter() - t0)
    finally:
        os.close(fd)
    return {"read": read, "write": write, "iops": iops}


def _guest(hv, name: str, accel: str, disks: List[str]):
    """A demo guest with these disks, driven on its console (bench_plumbing's)."""
    import threading
    from .bench_plumbing import _Guest
    g = _Guest.__new__(_Guest)
    g.hv = hv
    g.buf = bytearray()
    g.cond = threading.Condition()
    cfg = load_config_file(str(paths.guest_images_dir() / "demo.cfg"),
                           {"name": name, "disk": disks})
    cfg.load_images()
    g.dom = hv.run(hv.create_domain(cfg, accel=accel), timeout=60)
    hv.run(g._attach(), timeout=10)
    g.expect(r"demo> ")
    return g


def measure(hv, accel: str) -> Dict[str, object]:
    res: Dict[str, object] = {}
    tmp = tempfile.mkdtemp(prefix="qemu-xenpv-bench-")
    img = os.path.join(tmp, "bench.img")
    with open(img, "wb") as f:
        f.write(os.urandom(1 << 20) * IMAGE_MIB)
    disks = [f"file:{img},xvda,w"]
    qcow = None
    if shutil.which("qemu-img") and shutil.which("qemu-storage-daemon"):
        qcow = os.path.join(tmp, "bench.qcow2")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", img, qcow], check=True)
        disks.append(f"qcow2:{qcow},xvdb,w")
    g = None
    try:
        res["blk_python"] = _python_baseline(img)
        g = _guest(hv, "bench-block", accel, disks)

        def bench(cmd: str, pattern: str) -> float:
            g.send(cmd)
            return float(g.expect(pattern, timeout=120).group(1))

        mbs = r"(\d+\.\d+) MB/s"
        res["blk_read"] = bench(f"blk-bench xvda read {MIB}", mbs)
        res["blk_write"] = bench(f"blk-bench xvda write {MIB}", mbs)
        res["blk_iops"] = bench(f"blk-bench xvda rand {RAND}", r"(\d+) IOPS")
        g.send("blk-opt xvda persistent off")
        g.send("blk-open xvda")
        g.expect("blk-open: ok")
        res["blk_read_nopersist"] = bench(f"blk-bench xvda read {MIB}", mbs)
        if qcow:
            res["blk_read_qcow2"] = bench(f"blk-bench xvdb read {MIB}", mbs)
    finally:
        if g is not None:
            try:
                g.close()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def rows(res: Dict[str, object]) -> List[str]:
    if "blk_read" not in res:
        return []
    py = res["blk_python"]
    out = []
    for key, label, base, unit in (
            ("blk_read", "blkfront sequential read, 256 KiB", py["read"], "MB/s"),
            ("blk_write", "blkfront sequential write + flush", py["write"], "MB/s"),
            ("blk_iops", "blkfront 4 KiB random read, QD1", py["iops"], "IOPS"),
            ("blk_read_nopersist", "  ... read without persistent grants", py["read"], "MB/s"),
            ("blk_read_qcow2", "  ... read from qcow2 (qemu-storage-daemon)", py["read"],
             "MB/s")):
        v = res.get(key)
        if v is None:
            continue
        out.append(f"{label:<44} {v:>7.0f}{unit:<4} "
                   f"{'Python ' + format(base, '.0f') + unit:>18} {v / base:>6.3f}x")
    return out
