"""Disk images for blkback: the ``disk = [...]`` specs as xm and xl write
them, the virtual-device numbers of vbd-interface.txt, and the images
themselves.

* **raw** (``file:``, ``phy:``, ``format=raw``; regular files and block
  devices) is served directly: ``preadv``/``pwritev`` straight between the
  image and the guest's granted pages, ``fdatasync`` for a flush,
  ``fallocate(PUNCH_HOLE)`` for a discard.
* every other format QEMU's block layer knows (qcow2, qcow, vhd/vpc, vmdk,
  qed, vdi) is served by a ``qemu-storage-daemon`` started and stopped with
  the device, exporting NBD on a Unix socket in the run directory (the
  socket is bound here and handed over as a file descriptor, then its name
  is removed), spoken to by the small NBD client below (fixed newstyle,
  NBD_OPT_GO, simple replies).  A flush is NBD_CMD_FLUSH, which makes
  QEMU write its metadata and fsync.  The daemon gets SIGTERM if
  qemu-xenpv dies (PR_SET_PDEATHSIG), so it flushes and exits cleanly.

An image opened for writing is exclusive, as xend made it: a ``flock``
(shared for ``r``, exclusive for ``w``) on the image refuses a second
domain -- of this daemon or of another -- with a one-line error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from qemu_xenpv.errors import ConfigError, XenPVError

SECTOR = 512

# ---------------------------------------------------------------------------
# virtual devices (docs/misc/vbd-interface.txt)
# ---------------------------------------------------------------------------
_HD_MAJORS = (3, 22, 33, 34, 56, 57, 88, 89, 90, 91)
_SD_MAJORS = (8, 65, 66, 67, 68, 69, 70, 71, 128, 129, 130, 131, 132, 133, 134, 135)


def _disk_index(letters: str) -> int:
    """a -> 0, z -> 25, aa -> 26 (as Linux names disks)."""
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return n - 1


def vdev_to_devid(vdev: str) -> int:
    """xvda -> 51712, hda -> 768, sdb -> 2064, xvda1 -> 51713; a plain
    number is taken as it is.  ValueError for anything else."""
    v = vdev.strip()
    if v.isdigit():
        n = int(v)
        if n <= 0 or n >= 1 << 30:
            raise ValueError(f"virtual device number {v} is out of range")
        return n
    m = re.fullmatch(r"(xvd|hd|sd)([a-z]{1,3})(\d*)", v)
    if not m:
        raise ValueError(f"'{vdev}' is not a virtual device name (xvda, hdb, sdc, 51712)")
    kind, letters, part = m.group(1), m.group(2), m.group(3)
    disk = _disk_index(letters)
    p = int(part) if part else 0
    if kind == "xvd":
        if disk < 16 and p < 16:
            return (202 << 8) | (disk << 4) | p
        if disk < (1 << 20) and p < 256:
            return (1 << 28) | (disk << 8) | p
    elif kind == "hd":
        if disk < 2 * len(_HD_MAJORS) and p < 64:
            return (_HD_MAJORS[disk // 2] << 8) | ((disk % 2) << 6) | p
    else:
        if disk < 16 * len(_SD_MAJORS) and p < 16:
            return (_SD_MAJORS[disk // 16] << 8) | ((disk % 16) << 4) | p
    raise ValueError(f"'{vdev}' is out of range")


# ---------------------------------------------------------------------------
# disk specs (xl-disk-configuration.txt, and xm's 'file:/img,xvda,w')
# ---------------------------------------------------------------------------
# xl's format names -> QEMU's block drivers
FORMATS = {"raw": "raw", "qcow2": "qcow2", "qcow": "qcow", "vhd": "vpc", "vpc": "vpc",
           "vmdk": "vmdk", "qed": "qed", "vdi": "vdi"}
_PREFIXES = {"file": ("file", "raw"), "phy": ("phy", "raw"), "aio": ("file", "raw"),
             "raw": ("file", "raw"), "qcow2": ("file", "qcow2"), "qcow": ("file", "qcow"),
             "vhd": ("file", "vhd"), "qed": ("file", "qed"), "vmdk": ("file", "vmdk")}
_ACCESS = {"r": "r", "ro": "r", "w": "w", "rw": "w", "w!": "w!"}


@dataclass
class DiskSpec:
    target: str                 # image path (absolute once resolved)
    vdev: str                   # xvda
    devid: int                  # 51712
    format: str = "raw"         # xl's name: raw, qcow2, ...
    access: str = "w"           # r, w, w! (write, but shared)
    devtype: str = "disk"       # disk or cdrom
    backendtype: str = "file"   # file (regular file), phy (block device), qdisk
    discard: bool = True
    spec: str = ""              # as written

    @property
    def readonly(self) -> bool:
        return self.access == "r"

    def canonical(self) -> str:
        """The spec in xl's key=value form (target last), with the resolved path."""
        opts = [f"format={self.format}", f"vdev={self.vdev}", f"access={self.access}",
                f"devtype={self.devtype}"]
        if self.backendtype == "phy":
            opts.append("backendtype=phy")
        if not self.discard:
            opts.append("no-discard")
        return ",".join(opts + [f"target={self.target}"])


def _split_prefix(target: str, spec: DiskSpec) -> str:
    """Strip xm/xl's deprecated prefixes: file:, phy:, tap:aio:, tap:qcow2:, qcow2:..."""
    t = target
    for lead in ("tap2:", "tap:"):
        if t.startswith(lead):
            t = t[len(lead):]
            spec.backendtype = "file"
            if ":" not in t:
                return t
            break
    m = re.match(r"([a-z0-9]+):(.*)$", t, re.S)
    if m and m.group(1) in _PREFIXES:
        spec.backendtype, spec.format = _PREFIXES[m.group(1)]
        return m.group(2)
    if m and not t.startswith("/") and len(m.group(1)) > 1:
        raise ValueError(f"unknown disk prefix '{m.group(1)}:' (use file:, phy: or "
                         "format=...,target=...)")
    return t


def parse_disk_spec(spec: str, base_dir: Optional[str] = None) -> DiskSpec:
    """One element of ``disk = [...]``.  ValueError with a one-line reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty disk spec")
    text = spec.strip()
    d = DiskSpec(target="", vdev="", devid=0, spec=text)
    positional: List[str] = []
    seen_format = seen_access = False
    target = None
    rest = text
    while rest is not None:
        if rest.startswith("target="):          # target= is last: it may hold commas
            target = rest[len("target="):]
            break
        tok, sep, after = rest.partition(",")
        rest = after.lstrip() if sep else None
        tok = tok.strip()
        if not tok:
            continue
        if "=" in tok:
            k, v = (x.strip() for x in tok.split("=", 1))
            if k == "format":
                if v not in FORMATS:
                    raise ValueError(f"format '{v}' is not supported (raw, qcow2, qcow, "
                                     "vhd, vmdk, qed, vdi)")
                d.format, seen_format = v, True
            elif k == "vdev":
                d.vdev = v
            elif k in ("access", "mode"):
                if v not in _ACCESS:
                    raise ValueError(f"access '{v}' must be r, ro, w, rw or w!")
                d.access, seen_access = _ACCESS[v], True
            elif k == "devtype":
                if v not in ("disk", "cdrom"):
                    raise ValueError(f"devtype '{v}' must be disk or cdrom")
                d.devtype = v
            elif k == "backendtype":
                if v not in ("phy", "qdisk", "tap", "standalone"):
                    raise ValueError(f"backendtype '{v}' must be phy, qdisk or tap")
                d.backendtype = "phy" if v == "phy" else "file"
            elif k in ("script", "backend", "specification", "colo-host", "colo-port",
                       "colo-export", "active-disk", "hidden-disk", "trusted"):
                pass                            # accepted, meaningless here
            else:
                raise ValueError(f"unknown disk parameter '{k}'")
        elif tok in ("discard", "no-discard"):
            d.discard = tok == "discard"
        elif tok in ("direct-io-safe", "cdrom") and positional:
            if tok == "cdrom":
                d.devtype = "cdrom"
        else:
            positional.append(tok)
    # positional: target, then [format,] vdev, access (xm wrote target,vdev,access)
    if positional:
        if target is None:
            target = positional.pop(0)
        for tok in positional:
            if not seen_format and not d.vdev and tok in FORMATS:
                d.format, seen_format = tok, True
            elif not d.vdev:
                d.vdev = tok
            elif not seen_access and tok in _ACCESS:
                d.access, seen_access = _ACCESS[tok], True
            else:
                raise ValueError(f"unexpected '{tok}' (expected target,[format,]vdev,access)")
    if not target:
        raise ValueError("no target (the image): 'file:/path/disk.img,xvda,w' or "
                         "'format=raw,vdev=xvda,access=w,target=/path/disk.img'")
    if not seen_format:
        target = _split_prefix(target, d)
    else:
        fmt = d.format
        target = _split_prefix(target, d)
        d.format = fmt
    if not d.vdev:
        raise ValueError("no virtual device (vdev=xvda)")
    if d.vdev.endswith(":cdrom"):
        d.vdev, d.devtype = d.vdev[:-len(":cdrom")], "cdrom"
    elif d.vdev.endswith(":disk"):
        d.vdev = d.vdev[:-len(":disk")]
    d.devid = vdev_to_devid(d.vdev)
    if d.devtype == "cdrom" and d.access != "r":
        if seen_access:
            raise ValueError("a cdrom is read-only (access=r)")
        d.access = "r"
    target = os.path.expanduser(target)
    if base_dir and not os.path.isabs(target):
        target = os.path.join(base_dir, target)
    d.target = os.path.abspath(target) if (base_dir or os.path.isabs(target)) else target
    return d


def parse_disk_list(value, path: str = "<config>", base_dir: Optional[str] = None) -> List[DiskSpec]:
    """``disk = [...]`` -> DiskSpecs; ConfigError naming the bad element."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: disk must be a list of strings, not {type(value).__name__}")
    out: List[DiskSpec] = []
    for item in value:
        try:
            d = parse_disk_spec(item, base_dir)
        except ValueError as e:
            raise ConfigError(f"{path}: disk {item!r}: {e}") from None
        for o in out:
            if o.devid == d.devid:
                raise ConfigError(f"{path}: disk {item!r}: virtual device {d.vdev} is "
                                  f"given twice (as {o.vdev})")
        out.append(d)
    return out


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------
class ImageIOError(Exception):
    """An I/O request failed (the guest gets BLKIF_RSP_ERROR)."""


class NotSupported(ImageIOError):
    """The image cannot do this (BLKIF_RSP_EOPNOTSUPP)."""


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2

# images open in this process: (st_dev, st_ino) -> [(owner, access)]
_open: Dict[Tuple[int, int], List[Tuple[str, str]]] = {}
_open_lock = threading.Lock()


class Image:
    """What blkback needs of an image."""

    size = 0                        # bytes
    readonly = False
    can_discard = False
    kind = "raw"

    def readv(self, bufs: Sequence[memoryview], offset: int) -> None:
        raise NotImplementedError

    def writev(self, bufs: Sequence[memoryview], offset: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def discard(self, offset: int, length: int) -> None:
        raise NotSupported("discard")

    def close(self) -> None:
        pass


class _Lock:
    """flock on the image (shared for r, exclusive for w) + who holds it here."""

    def __init__(self, fd: int, path: str, access: str, owner: str):
        st = os.fstat(fd)
        self.key = (st.st_dev, st.st_ino)
        self.entry = (owner, access)
        op = fcntl.LOCK_EX if access == "w" else fcntl.LOCK_SH
        with _open_lock:
            holders = _open.get(self.key, [])
            for who, acc in holders:
                if acc == "w" or access == "w":
                    raise XenPVError(
                        f"image '{path}' is already in use by {who} (access {acc}): an image "
                        "is opened for writing by one domain only")
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                raise XenPVError(
                    f"image '{path}' is locked by another program (a domain of another "
                    f"qemu-xenpv daemon, or QEMU): it cannot be opened with access "
                    f"'{access}'") from None
            except OSError:
                pass                        # a file system without flock: no lock
            _open.setdefault(self.key, []).append(self.entry)

    def release(self) -> None:
        with _open_lock:
            holders = _open.get(self.key, [])
            if self.entry in holders:
                holders.remove(self.entry)
            if not holders:
                _open.pop(self.key, None)


def _open_target(path: str, readonly: bool) -> int:
    flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise XenPVError(f"image '{path}' does not exist") from None
    except IsADirectoryError:
        raise XenPVError(f"image '{path}' is a directory") from None
    except PermissionError:
        raise XenPVError(f"image '{path}': permission denied"
                         + ("" if readonly else " (give access 'r' for a read-only disk)")) \
            from None
    except OSError as e:
        raise XenPVError(f"image '{path}': {e.strerror}") from None


class RawImage(Image):
    """A raw image file or block device, I/O straight into guest pages."""

    kind = "raw"

    def __init__(self, path: str, readonly: bool, owner: str = "a domain",
                 shared: bool = False):
        self.path = path
        self.readonly = readonly
        self.fd = _open_target(path, readonly)
        try:
            st = os.fstat(self.fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise XenPVError(f"image '{path}' is neither a file nor a block device")
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            self.lock = _Lock(self.fd, path, "r" if readonly or shared else "w", owner)
        except BaseException:
            os.close(self.fd)
            raise
        self.can_discard = not readonly

    def readv(self, bufs, offset):
        want = sum(len(b) for b in bufs)
        try:
            n = os.preadv(self.fd, bufs, offset)
        except OSError as e:
            raise ImageIOError(e.strerror) from None
        if n != want:                       # short read: finish it piece by piece
            self._finish(bufs, offset, n, write=False)

    def writev(self, bufs, offset):
        want = sum(len(b) for b in bufs)
        try:
            n = os.pwritev(self.fd, bufs, offset)
        except OSError as e:
            raise ImageIOError(e.strerror) from None
        if n != want:
            self._finish(bufs, offset, n, write=True)

    def _finish(self, bufs, offset, done, write):
        pos = 0
        for b in bufs:
            end = pos + len(b)
            if end > done:
                part = b[max(0, done - pos):]
                off = offset + max(done, pos)
                while len(part):
                    try:
                        k = os.pwrite(self.fd, part, off) if write else os.preadv(self.fd, [part], off)
                    except OSError as e:
                        raise ImageIOError(e.strerror) from None
                    if k <= 0:
                        if write:
                            raise ImageIOError("short write")
                        part[:] = bytes(len(part))      # past the end of a file: zeros
                        break
                    part = part[k:]
                    off += k
            pos = end

    def flush(self):
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise ImageIOError(e.strerror) from None

    def discard(self, offset, length):
        if length <= 0:
            return
        r = _libc.fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        if r != 0:
            err = ctypes.get_errno()
            if err in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise NotSupported(os.strerror(err))
            raise ImageIOError(os.strerror(err))

    def close(self):
        if self.fd >= 0:
            try:
                if not self.readonly:
                    os.fsync(self.fd)
            except OSError:
                pass
            self.lock.release()
            os.close(self.fd)           # drops the flock
            self.fd = -1


# ---- NBD (doc/proto.md of the NBD project) ----
NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES = 1, 2
NBD_OPT_GO, NBD_OPT_ABORT = 7, 2
NBD_REP_ACK, NBD_REP_INFO = 1, 3
NBD_INFO_EXPORT = 0
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_FLUSH, NBD_CMD_TRIM = 0, 1, 2, 3, 4
NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_TRIM = 2, 4, 32
_REQ = struct.Struct(">IHHQQI")
_RSP = struct.Struct(">IIQ")


class NbdError(Exception):
    pass


class NbdClient:
    """A minimal NBD client over a connected socket (one request at a time)."""

    def __init__(self, sock: socket.socket, export: str = "disk"):
        self.sock = sock
        self.handle = 0
        self._handshake(export)

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        while len(view):
            k = self.sock.recv_into(view)
            if k == 0:
                raise NbdError("the NBD server closed the connection")
            view = view[k:]

    def _handshake(self, export: str) -> None:
        magic, opt, hflags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT or not hflags & NBD_FLAG_FIXED_NEWSTYLE:
            raise NbdError("not a fixed-newstyle NBD server")
        self.sock.sendall(struct.pack(">I", NBD_FLAG_FIXED_NEWSTYLE
                                      | (hflags & NBD_FLAG_NO_ZEROES)))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, NBD_INFO_EXPORT)
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, NBD_OPT_GO, len(data)) + data)
        self.size = None
        self.tflags = 0
        while True:
            magic, opt, rtype, length = struct.unpack(">QIII", self._recv(20))
            if magic != REPLY_MAGIC:
                raise NbdError("bad option reply")
            payload = self._recv(length) if length else b""
            if rtype & 0x80000000:
                raise NbdError(f"export '{export}' refused: {payload.decode(errors='replace')}")
            if rtype == NBD_REP_INFO and len(payload) >= 12:
                itype = struct.unpack_from(">H", payload)[0]
                if itype == NBD_INFO_EXPORT:
                    self.size, self.tflags = struct.unpack_from(">QH", payload, 2)
            elif rtype == NBD_REP_ACK:
                break
        if self.size is None:
            raise NbdError("the NBD server did not say the export's size")

    def _request(self, cmd: int, offset: int, length: int, into=None) -> None:
        self.handle = (self.handle + 1) & 0xFFFFFFFFFFFFFFFF
        self.sock.sendall(_REQ.pack(REQUEST_MAGIC, 0, cmd, self.handle, offset, length))
        magic, err, handle = _RSP.unpack(self._recv(_RSP.size))
        if magic != SIMPLE_REPLY_MAGIC or handle != self.handle:
            raise NbdError("bad NBD reply")
        if err:
            # a read's data does not follow an error reply
            raise ImageIOError(f"NBD error {err} ({os.strerror(err)})")
        for v in into or ():
            self._recv_into(v)

    def read(self, bufs, offset):
        self._request(NBD_CMD_READ, offset, sum(len(b) for b in bufs), into=bufs)

    def write(self, bufs, offset):
        total = sum(len(b) for b in bufs)
        self.handle = (self.handle + 1) & 0xFFFFFFFFFFFFFFFF
        msg = [_REQ.pack(REQUEST_MAGIC, 0, NBD_CMD_WRITE, self.handle, offset, total), *bufs]
        _sendmsg_all(self.sock, msg)
        magic, err, handle = _RSP.unpack(self._recv(_RSP.size))
        if magic != SIMPLE_REPLY_MAGIC or handle != self.handle:
            raise NbdError("bad NBD reply")
        if err:
            raise ImageIOError(f"NBD error {err} ({os.strerror(err)})")

    def flush(self):
        self._request(NBD_CMD_FLUSH, 0, 0)

    def trim(self, offset, length):
        self._request(NBD_CMD_TRIM, offset, length)

    def disconnect(self):
        try:
            self.sock.sendall(_REQ.pack(REQUEST_MAGIC, 0, NBD_CMD_DISC, 0, 0, 0))
        except OSError:
            pass


def _sendmsg_all(sock: socket.socket, bufs) -> None:
    bufs = [memoryview(b).cast("B") for b in bufs]
    while bufs:
        n = sock.sendmsg(bufs)
        while n and bufs:
            if n >= len(bufs[0]):
                n -= len(bufs[0])
                bufs.pop(0)
            else:
                bufs[0] = bufs[0][n:]
                n = 0


def qemu_storage_daemon() -> Optional[str]:
    return shutil.which(os.environ.get("QEMU_XENPV_QSD", "qemu-storage-daemon"))


def _pdeathsig() -> None:
    try:
        _libc.prctl(1, signal.SIGTERM, 0, 0, 0)         # PR_SET_PDEATHSIG
    except Exception:
        pass


class QemuImage(Image):
    """A non-raw image through qemu-storage-daemon's NBD export."""

    def __init__(self, path: str, fmt: str, readonly: bool, sock_dir: str, name: str,
                 owner: str = "a domain", shared: bool = False, discard: bool = True):
        self.path = path
        self.readonly = readonly
        self.kind = fmt
        self.proc = None
        self.client = None
        qsd = qemu_storage_daemon()
        if not qsd:
            raise XenPVError(f"image '{path}' (format {fmt}) needs qemu-storage-daemon: install "
                             "Debian's qemu-system-common (or give a raw image)")
        self.lockfd = _open_target(path, True)
        try:
            self.lock = _Lock(self.lockfd, path, "r" if readonly or shared else "w", owner)
        except BaseException:
            os.close(self.lockfd)
            raise
        try:
            self._start(qsd, path, fmt, readonly, sock_dir, name, discard)
        except BaseException:
            self.close()
            raise
        self.size = self.client.size
        self.can_discard = bool(self.client.tflags & NBD_FLAG_SEND_TRIM) and not readonly

    def _start(self, qsd, path, fmt, readonly, sock_dir, name, discard):
        os.makedirs(sock_dir, mode=0o700, exist_ok=True)
        sock_path = os.path.join(sock_dir, f"{name}.sock")
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lsock.bind(sock_path)
            lsock.listen(1)
            ro = "on" if readonly else "off"
            proto = "host_device" if stat.S_ISBLK(os.fstat(self.lockfd).st_mode) else "file"
            disc = ",discard=unmap" if discard and not readonly else ""
            args = [qsd,
                    "--blockdev", f"driver={proto},node-name=file0,filename={_qarg(path)},"
                                  f"read-only={ro}{disc}",
                    "--blockdev", f"driver={FORMATS[fmt]},node-name=disk0,file=file0,"
                                  f"read-only={ro}{disc}",
                    "--nbd-server", f"addr.type=fd,addr.str={lsock.fileno()}",
                    "--export", f"type=nbd,id=exp0,node-name=disk0,name=disk,"
                                f"writable={'off' if readonly else 'on'}"]
            # its messages go to an unnamed file: a pipe nobody reads could fill up
            self.errfile = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self.errfile, pass_fds=[lsock.fileno()],
                                         preexec_fn=_pdeathsig)
            lsock.close()           # QEMU's copy only: if it dies, connecting fails at once
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(30)
            try:
                c.connect(sock_path)
                self.client = NbdClient(c)
            except (OSError, NbdError) as e:
                c.close()
                raise XenPVError(f"image '{path}' (format {fmt}): {self._why(e)}") from None
            c.settimeout(None)
        finally:
            lsock.close()
            try:
                os.unlink(sock_path)        # connected: the name is not needed any more
            except FileNotFoundError:
                pass

    def _why(self, e) -> str:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return f"qemu-storage-daemon did not answer ({e})"
        self.errfile.seek(0)
        err = self.errfile.read().decode(errors="replace").strip().splitlines()
        msg = err[-1] if err else str(e)
        if msg.startswith("qemu-storage-daemon: "):
            msg = msg[len("qemu-storage-daemon: "):]
        if msg.startswith("--") and ": " in msg:      # the option it failed on: not useful
            msg = msg.rsplit(": ", 1)[1]
        return msg

    def readv(self, bufs, offset):
        try:
            self.client.read(bufs, offset)
        except (OSError, NbdError) as e:
            raise ImageIOError(str(e)) from None

    def writev(self, bufs, offset):
        try:
            self.client.write(bufs, offset)
        except (OSError, NbdError) as e:
            raise ImageIOError(str(e)) from None

    def flush(self):
        try:
            self.client.flush()
        except (OSError, NbdError) as e:
            raise ImageIOError(str(e)) from None

    def discard(self, offset, length):
        if not self.can_discard:
            raise NotSupported("discard")
        try:
            self.client.trim(offset, length)
        except (OSError, NbdError) as e:
            raise ImageIOError(str(e)) from None

    def close(self):
        if self.client is not None:
            try:
                if not self.readonly:
                    self.client.flush()
            except Exception:
                pass
            self.client.disconnect()
            self.client.sock.close()
            self.client = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()           # QEMU flushes and closes the image
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if getattr(self, "errfile", None) is not None:
            self.errfile.close()
            self.errfile = None
        if self.lockfd >= 0:
            self.lock.release() if hasattr(self, "lock") else None
            os.close(self.lockfd)
            self.lockfd = -1


def _qarg(s: str) -> str:
    """A value inside QEMU's key=value,... option syntax (commas doubled)."""
    return s.replace(",", ",,")


def open_image(spec: DiskSpec, sock_dir: str, name: str, owner: str) -> Image:
    """Open the image a DiskSpec names; XenPVError (one line) if it cannot be."""
    shared = spec.access == "w!"
    if spec.format == "raw":
        return RawImage(spec.target, spec.readonly, owner, shared)
    return QemuImage(spec.target, spec.format, spec.readonly, sock_dir, name, owner, shared,
                     spec.discard)
