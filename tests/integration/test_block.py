"""Disks on booted demo guests (blkback + the guest's blkfront), checked
from the host: a pattern written through blkfront is in the raw image and
in the qcow2 image after poweroff, a flushed write survives kill -9 of
qemu-xenpv and QEMU, a read-only disk refuses writes, an image opened for
writing is refused to a second domain, a hostile frontend gets errors (and
one that scribbles on its ring indices is disconnected) while the back end
keeps serving every other disk and domain, and disks come and go with
block-attach / block-detach while the guest runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from conftest import qemu_pids
from .demo_guest import PROMPT, boot, poweroff, run

SECTOR = 512
QEMU_IMG = shutil.which("qemu-img")
QSD = shutil.which("qemu-storage-daemon")
need_qemu_block = pytest.mark.skipif(
    not (QEMU_IMG and QSD),
    reason="qcow2 needs qemu-img (Debian qemu-utils) and qemu-storage-daemon "
           "(qemu-system-common)")


def pattern(seed: int, sector: int) -> bytes:
    """The demo's blk-write pattern (guest-images/demo/blkcmds.c)."""
    out = bytearray(SECTOR)
    out[0:8] = sector.to_bytes(8, "little")
    out[8:12] = seed.to_bytes(4, "little")
    for i in range(12, SECTOR):
        out[i] = (seed * 7 + sector * 13 + i) & 0xFF
    return bytes(out)


def expected(seed: int, first: int, count: int) -> bytes:
    return b"".join(pattern(seed, s) for s in range(first, first + count))


def raw_image(path: Path, mib: int = 8, fill_seed=None) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib << 20)
        if fill_seed is not None:
            f.write(expected(fill_seed, 0, 64))
    return path


def qcow2_image(path: Path, mib: int = 16) -> Path:
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), f"{mib}M"], check=True)
    return path


def qcow2_bytes(path: Path, tmp: Path, force_share: bool = False) -> bytes:
    out = tmp / (path.name + ".raw")
    cmd = [QEMU_IMG, "convert", "-f", "qcow2", "-O", "raw"]
    if force_share:
        cmd.append("-U")            # the image is still open (and locked) by the domain
    subprocess.run(cmd + [str(path), str(out)], check=True, capture_output=True)
    return out.read_bytes()


def read_at(path: Path, sector: int, count: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(sector * SECTOR)
        return f.read(count * SECTOR)


def disks(*specs) -> str:
    return "disk=" + repr(list(specs))


def ls(xenpv, path: str) -> dict:
    """The keys directly below path (one xenstore-ls: each CLI call costs a process)."""
    out = {}
    for line in xenpv.run("xenstore-ls", path, check=True).stdout.splitlines():
        if line and not line.startswith(" ") and " = " in line:
            k, v = line.split(" = ", 1)
            out[k] = v.strip().strip('"')
    return out


def ok(c, command: str, want: str) -> str:
    out = run(c, command)
    assert want in out, f"{command!r}: {out!r}"
    return out


# ---------------------------------------------------------------------------
@need_qemu_block
def test_pattern_reaches_raw_and_qcow2_images_and_ro_refuses(xenpv, tmp_path):
    a = raw_image(tmp_path / "a.img")
    q = qcow2_image(tmp_path / "q.qcow2")
    r = raw_image(tmp_path / "r.img", fill_seed=5)
    c, name, domid = boot(xenpv, "blk", disks(f"file:{a},xvda,w",
                                              f"format=qcow2,vdev=xvdb,access=w,target={q}",
                                              f"{r},raw,xvdc,r"))
    out = run(c, "blk-list")
    assert "blk-list: 3 disk(s)" in out
    assert "xvda devid 51712 sectors 16384 sector-size 512 rw" in out
    assert "xvdb devid 51728 sectors 32768 sector-size 512 rw" in out
    assert "xvdc devid 51744 sectors 16384 sector-size 512 ro" in out

    # the XenStore keys a real frontend reads (Mini-OS, Linux) and ours wrote
    be = ls(xenpv, f"/local/domain/0/backend/vbd/{domid}/51712")
    for key, value in (("state", "4"), ("sectors", "16384"), ("sector-size", "512"),
                       ("info", "0"), ("mode", "w"), ("feature-flush-cache", "1"),
                       ("feature-barrier", "1"), ("feature-discard", "1"),
                       ("feature-max-indirect-segments", "256"),
                       ("max-ring-page-order", "4"), ("feature-persistent", "1"),
                       ("frontend-id", str(domid)), ("online", "1"), ("dev", "xvda")):
        assert be.get(key) == value, key
    fe_path = f"/local/domain/{domid}/device/vbd/51712"
    fe = ls(xenpv, fe_path)
    for key, value in (("protocol", "x86_32-abi"), ("ring-page-order", "2"), ("state", "4"),
                       ("backend-id", "0"), ("virtual-device", "51712"),
                       ("feature-persistent", "1")):
        assert fe.get(key) == value, key
    assert all(f"ring-ref{i}" in fe for i in range(4)) and "event-channel" in fe

    # raw: 300 sectors (indirect requests, several segments), flushed
    ok(c, "blk-write xvda 10 300 11", "blk-write: ok 300 sectors")
    ok(c, "blk-flush xvda", "blk-flush: ok")
    assert read_at(a, 10, 300) == expected(11, 10, 300)     # on the image while running
    ok(c, "blk-verify xvda 10 300 11", "blk-verify: ok")
    # qcow2 through qemu-storage-daemon; after a barrier it is consistent on disk
    ok(c, "blk-write xvdb 1000 200 12", "blk-write: ok 200 sectors")
    ok(c, "blk-flush xvdb barrier", "blk-flush: ok")
    ok(c, "blk-verify xvdb 1000 200 12", "blk-verify: ok")
    assert qcow2_bytes(q, tmp_path, force_share=True)[1000 * SECTOR:1200 * SECTOR] == \
        expected(12, 1000, 200)
    # the read-only disk: its data reads, writes and discards are refused
    ok(c, "blk-verify xvdc 0 64 5", "blk-verify: ok 64 sectors")
    ok(c, "blk-write xvdc 0 8 1", "blk-write: error -1 (BLKIF_RSP_ERROR)")
    ok(c, "blk-discard xvdc 0 8", "blk-discard: error BLKIF_RSP_ERROR")
    # a discard punches a hole (reads back as zeros), the rest stays
    ok(c, "blk-discard xvda 16 8", "blk-discard: ok")
    ok(c, "blk-read xvda 16", "blk-read: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")
    ok(c, "blk-verify xvda 24 286 11", "blk-verify: ok")
    # a single-page ring (ring-ref) after reconnecting: the same data
    ok(c, "blk-open xvda 0", "blk-open: ok")
    fe = ls(xenpv, fe_path)
    assert "ring-ref" in fe and "ring-page-order" not in fe and "ring-ref0" not in fe
    ok(c, "blk-verify xvda 10 6 11", "blk-verify: ok")
    ok(c, "blk-write xvda 5000 40 13", "blk-write: ok")          # not flushed: poweroff must keep it
    ok(c, "blk-write xvdb 5000 40 14", "blk-write: ok")

    assert poweroff(c) == 0
    assert read_at(a, 10, 6) == expected(11, 10, 6)
    assert read_at(a, 16, 8) == bytes(8 * SECTOR)
    assert read_at(a, 24, 286) == expected(11, 24, 286)
    assert read_at(a, 5000, 40) == expected(13, 5000, 40)
    data = qcow2_bytes(q, tmp_path)
    assert data[1000 * SECTOR:1200 * SECTOR] == expected(12, 1000, 200)
    assert data[5000 * SECTOR:5040 * SECTOR] == expected(14, 5000, 40)
    assert read_at(r, 0, 64) == expected(5, 0, 64)                    # untouched
    subprocess.run([QEMU_IMG, "check", "-q", str(q)], check=True)     # not corrupted


def test_hostile_frontend_gets_errors_and_others_are_served(xenpv, tmp_path):
    a = raw_image(tmp_path / "a.img")
    b = raw_image(tmp_path / "b.img")
    before = a.read_bytes()
    ca, name_a, domid_a = boot(xenpv, "evil", disks(f"file:{a},xvda,w"))
    cb, name_b, _ = boot(xenpv, "good", disks(f"file:{b},xvda,w"))
    # the same image for writing in a second domain is refused, as xend did
    r = xenpv.run("create", Path(__file__).parents[2] / "guest-images" / "demo.cfg",
                  f"name={xenpv.name('third')}", disks(f"file:{a},xvdb,w"))
    assert r.returncode == 1
    assert "is already in use by domain" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not any("third" in l for l in xenpv.run("list").stdout.splitlines())

    for kind in ("gref", "segs", "sect", "outside", "op", "indirect", "pt"):
        out = run(ca, f"blk-evil xvda {kind}")
        assert "blk-evil: passed" in out and "FAIL" not in out, out
    assert a.read_bytes() == before                 # no hostile request wrote anything
    ok(cb, "blk-write xvda 0 64 21", "blk-write: ok")
    # ring index garbage: that device is disconnected with an error ...
    ok(ca, "blk-evil xvda ring", "blk-evil: passed")
    err = xenpv.run("xenstore-read", f"/local/domain/0/backend/vbd/{domid_a}/51712/error")
    assert "ring protocol" in err.stdout
    # ... while the other guest's disk is served
    ok(cb, "blk-verify xvda 0 64 21", "blk-verify: ok")
    ok(cb, "blk-write xvda 64 64 22", "blk-write: ok")
    # the hostile guest can reconnect (Initialising -> InitWait -> Connected)
    ok(ca, "blk-open xvda", "blk-open: ok")
    ok(ca, "blk-write xvda 0 8 23", "blk-write: ok")
    assert "frontend broke the ring protocol" in xenpv.run("dmesg").stdout
    assert poweroff(ca) == 0
    assert poweroff(cb) == 0
    assert read_at(b, 0, 128) == expected(21, 0, 64) + expected(22, 64, 64)
    assert read_at(a, 0, 8) == expected(23, 0, 8)


def test_block_attach_and_detach_while_running(xenpv, tmp_path):
    a = raw_image(tmp_path / "a.img")
    h = raw_image(tmp_path / "hot.img", mib=4)
    c, name, domid = boot(xenpv, "hot", disks(f"file:{a},xvda,w"))
    r = xenpv.run("block-attach", name, f"file:{h},xvdb,w")
    assert r.returncode == 0, r.stderr
    c.expect(r"blkfront: xvdb \(51728\) connected: 8192 sectors")
    c.sendline("")
    c.expect_exact(PROMPT)
    ok(c, "blk-write xvdb 0 32 31", "blk-write: ok")
    listing = xenpv.run("block-list", name).stdout
    assert "xvdb" in listing and str(h) in listing
    # attaching the same vdev again, or a missing image, is a one-line error
    r = xenpv.run("block-attach", name, f"file:{h},xvdb,w")
    assert r.returncode == 1 and "already has a disk xvdb" in r.stderr
    r = xenpv.run("block-attach", name, f"file:{tmp_path}/nope.img,xvdc,w")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = xenpv.run("block-attach", name, "file:/x,zzz,w")
    assert r.returncode == 1 and "not a virtual device name" in r.stderr

    r = xenpv.run("block-detach", name, "xvdb")
    assert r.returncode == 0 and "removed anyway" not in r.stderr, r.stderr
    c.expect_exact("blkfront: xvdb disconnected")
    assert "xvdb" not in xenpv.run("block-list", name).stdout
    assert xenpv.run("xenstore-read",
                     f"/local/domain/0/backend/vbd/{domid}/51728/state").returncode != 0
    assert read_at(h, 0, 32) == expected(31, 0, 32)
    # the image is free again: another domain may open it for writing
    c2, name2, _ = boot(xenpv, "next", disks(f"file:{h},xvda,w"))
    ok(c2, "blk-verify xvda 0 32 31", "blk-verify: ok")
    assert poweroff(c2) == 0
    assert poweroff(c) == 0


def _children(pid: int):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


@need_qemu_block
def test_flushed_writes_survive_kill_9(xenpv, tmp_path):
    a = raw_image(tmp_path / "a.img")
    q = qcow2_image(tmp_path / "q.qcow2")
    c, name, domid = boot(xenpv, "k9", disks(f"file:{a},xvda,w", f"qcow2:{q},xvdb,w"))
    ok(c, "blk-write xvda 100 128 41", "blk-write: ok")
    ok(c, "blk-flush xvda", "blk-flush: ok")
    ok(c, "blk-write xvdb 300 128 42", "blk-write: ok")
    ok(c, "blk-flush xvdb barrier", "blk-flush: ok")
    daemon = xenpv.daemon_pid()
    qsd = [p for p in _children(daemon)
           if b"qemu-storage-daemon" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(qsd) == 1
    qemus = qemu_pids(xenpv.tag)
    for pid in qsd + [daemon] + qemus:          # nobody gets to flush anything now
        os.kill(pid, signal.SIGKILL)
    c.expect(pexpect.EOF, timeout=30)
    deadline = time.time() + 10
    while any(Path(f"/proc/{p}").exists() for p in qsd + qemus) and time.time() < deadline:
        time.sleep(0.05)
    assert read_at(a, 100, 128) == expected(41, 100, 128)
    assert qcow2_bytes(q, tmp_path)[300 * SECTOR:428 * SECTOR] == expected(42, 300, 128)
    subprocess.run([QEMU_IMG, "check", "-q", str(q)], check=True)
    (xenpv.rundir / "control.sock").unlink(missing_ok=True)


@need_qemu_block
def test_destroy_during_writes_leaves_a_clean_image(xenpv, tmp_path):
    q = qcow2_image(tmp_path / "q.qcow2", mib=64)
    a = raw_image(tmp_path / "a.img", mib=64)
    c, name, domid = boot(xenpv, "dw", disks(f"qcow2:{q},xvda,w", f"file:{a},xvdb,w"))
    ok(c, "blk-write xvda 0 64 51", "blk-write: ok")
    ok(c, "blk-flush xvda", "blk-flush: ok")
    c.sendline("blk-bench xvda write 48")       # ~0.3 s of writes, cut short by destroy
    time.sleep(0.1)
    r = xenpv.run("destroy", name)
    assert r.returncode == 0, r.stderr
    c.expect(pexpect.EOF)
    subprocess.run([QEMU_IMG, "check", "-q", str(q)], check=True)
    # the image is closed and unlocked: the next domain uses it
    c, name, domid = boot(xenpv, "dw2", disks(f"qcow2:{q},xvda,w"))
    ok(c, "blk-write xvda 200 16 52", "blk-write: ok")
    ok(c, "blk-verify xvda 200 16 52", "blk-verify: ok")
    assert poweroff(c) == 0
    subprocess.run([QEMU_IMG, "check", "-q", str(q)], check=True)
