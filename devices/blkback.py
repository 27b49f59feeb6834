"""blkback: the block back end (io/blkif.h), serving unmodified blkfront
drivers (Mini-OS's, Linux's xen-blkfront, ours in guest-images/lib).

One :class:`BlkBackend` per virtual disk, on the shared xenbus mechanism
(xenbus.py).  The rings are laid out for the x86_32 ABI (the ``protocol``
key must be ``x86_32-abi`` or absent).  Requests are served by a worker
thread per disk, one at a time and in ring order, so a barrier or a flush
orders everything naturally:

* READ / WRITE: up to 11 segments, each a granted page and a sector range
  ``first_sect..last_sect`` within it (0..7); the segments of a request are
  contiguous on the disk.  The pages are mapped (read-only for a write)
  and the I/O goes straight between the image and guest memory.
* WRITE_BARRIER: fdatasync, the write, fdatasync -- everything acknowledged
  before it, and the barrier write itself, is on stable storage when it is
  answered.  FLUSH_DISKCACHE: fdatasync; with segments (Linux sends its FUA
  writes so) also the write and a second fdatasync.
* DISCARD: a hole is punched in a raw image (NBD TRIM for the others).
* INDIRECT (``feature-max-indirect-segments`` = 256): READ/WRITE whose
  segments are in up to 8 granted pages (read by grant copy).
* Multi-page rings: ``max-ring-page-order`` = 4 (up to 16 pages).

A request outside the disk, a bad grant, a bad sector range, too many
segments or a write to a read-only disk gets BLKIF_RSP_ERROR; an unknown
operation (or a secure discard) gets BLKIF_RSP_EOPNOTSUPP.  Nothing outside
the granted pages and the image range is ever touched.  A frontend whose
``req_prod`` runs more than a ring ahead is disconnected (xenbus ``fail``);
every other disk and domain keeps being served.

``feature-persistent`` is offered: when the frontend says it too, every
grant it uses for data is mapped once (writable) and kept until it
disconnects (at most 1056 per disk, then grants are mapped per request).
Mapping a grant costs ~17 us of Python here (pin, type reference, view),
a 256 KiB read 64 of them: persistent grants make that read ~10x cheaper
for the back end (docs/devices.md has the figures).
"""

from __future__ import annotations

import logging
import struct
from typing import List, Optional

from qemu_xenpv.errors import XenPVError
from . import xenbus
from .storage import DiskSpec, Image, ImageIOError, NotSupported, open_image, parse_disk_spec
from .xenbus import BackendDevice, BackRing, RingError, XenbusError

log = logging.getLogger("qemu_xenpv.blkback")

# io/blkif.h
BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER = 0, 1, 2
BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_RESERVED_1, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT = 3, 4, 5, 6
BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP = 0, -1, -2
BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
BLKIF_DISCARD_SECURE = 1
VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY = 1, 2, 4
SECTOR = 512
SECTORS_PER_PAGE = 4096 // SECTOR
SEGS_PER_INDIRECT_FRAME = 4096 // 8

MAX_INDIRECT_SEGMENTS = 256         # what we offer (Linux blkback's default)
MAX_RING_PAGE_ORDER = 4             # 16 pages, 512 requests (Linux's default)
MAX_PERSISTENT_GRANTS = 1056       # per disk (Linux blkback's max_pgrants)
MAX_LOGGED_ERRORS = 20              # per device: a hostile guest cannot flood dmesg

# x86_32 layouts (xen-abi-i686.md section 9)
REQ_SIZE, RSP_SIZE = 108, 12
_HDR = struct.Struct("<BBHQQ")              # op, nr_segments, handle, id, sector_number
_SEG = struct.Struct("<IBBxx")              # gref, first_sect, last_sect
_DISCARD = struct.Struct("<BBHQQQ")         # op, flag, handle, id, sector_number, nr_sectors
_INDIRECT = struct.Struct("<BBHQQH2x8I")    # op, indirect_op, nr_segments, id, sector, handle, grefs
_RSP = struct.Struct("<QBxh")               # id, operation, status
_ID = struct.Struct("<Q")
assert _HDR.size == 20 and _DISCARD.size == 28 and _INDIRECT.size == 56 and _RSP.size == 12


class BadRequest(Exception):
    """The request is refused with ``status``."""

    def __init__(self, msg: str, status: int = BLKIF_RSP_ERROR):
        super().__init__(msg)
        self.status = status


class BlkBackend(BackendDevice):
    kind = "vbd"

    def __init__(self, dom, spec: DiskSpec, image: Image):
        super().__init__(dom, spec.devid)
        self.spec = spec
        self.image = image
        self.readonly = spec.readonly or image.readonly
        self.sectors = image.size // SECTOR
        self.ring: Optional[BackRing] = None
        self.worker = None
        self.errors_logged = 0
        self.persistent = False             # both ends said feature-persistent
        self.pgrants = {}                   # gref -> GrantMapping kept until disconnect
        self.stats = {"requests": 0, "errors": 0, "read_bytes": 0, "write_bytes": 0,
                      "flushes": 0, "discards": 0}

    # ---- xenbus hooks ----
    def backend_entries(self):
        s = self.spec
        return {"params": s.target, "type": "phy" if s.backendtype == "phy" else
                ("file" if s.format == "raw" else "qdisk"),
                "mode": "r" if self.readonly else "w", "dev": s.vdev,
                "device-type": s.devtype, "removable": 0, "bootable": 1,
                "discard-enable": int(self.image.can_discard and s.discard)}

    def frontend_entries(self):
        return {"virtual-device": self.devid, "device-type": self.spec.devtype}

    def features(self):
        f = {"feature-flush-cache": 1, "feature-barrier": 1, "feature-persistent": 1,
             "feature-max-indirect-segments": MAX_INDIRECT_SEGMENTS,
             "max-ring-page-order": MAX_RING_PAGE_ORDER,
             "sector-size": SECTOR, "physical-sector-size": SECTOR}
        if self.image.can_discard and self.spec.discard and not self.readonly:
            f.update({"feature-discard": 1, "discard-granularity": 4096,
                      "discard-alignment": 0, "discard-secure": 0})
        else:
            f["feature-discard"] = 0
        return f

    def info_flags(self) -> int:
        flags = VDISK_READONLY if self.readonly else 0
        if self.spec.devtype == "cdrom":
            flags |= VDISK_CDROM | VDISK_REMOVABLE
        return flags

    def connect(self, fe):
        refs = self.ring_refs(fe, max_order=MAX_RING_PAGE_ORDER)
        evtchn = fe.read_int("event-channel", limit=1023)
        if evtchn is None:
            raise XenbusError("frontend wrote no event-channel")
        self.persistent = fe.read_str("feature-persistent", "0").strip() == "1"
        pages = self.map_ring(refs)
        self.ring = BackRing(pages, REQ_SIZE, RSP_SIZE)
        if self.worker is None:
            self.worker = self.add_worker("io", self._process)
        self.bind_evtchn(evtchn, self.worker.kick)
        self.worker.kick()
        self.nr_ring_pages = len(refs)
        return {"sectors": self.sectors, "info": self.info_flags(), "sector-size": SECTOR}

    def describe_connection(self):
        return (f"{self.spec.vdev}, {self.sectors} sectors, {self.image.kind}"
                f"{' ro' if self.readonly else ''}, ring {self.nr_ring_pages} page(s) "
                f"of {self.ring.nr_ents}, event channel {self.port}")

    def disconnect(self):
        self.ring = None
        maps, self.pgrants = list(self.pgrants.values()), {}
        self.retire_maps(maps)

    def release(self):
        self.image.close()

    def info(self):
        i = super().info()
        i.update({"vdev": self.spec.vdev, "target": self.spec.target, "format": self.spec.format,
                  "mode": "r" if self.readonly else "w", "sectors": self.sectors,
                  "stats": dict(self.stats)})
        return i

    # ---- the worker ----
    def _process(self) -> bool:
        """Serve what is on the ring; True to be called again at once."""
        with self.io() as conn:
            return self._pass(conn)

    def _pass(self, conn: int) -> bool:
        ring = self.ring
        if ring is None or not self.connected or conn != self.connection:
            return False
        try:
            n = ring.unconsumed()
            if n == 0:
                return ring.final_check()
            for _ in range(min(n, 64)):
                raw = ring.take_request()
                rsp = self._serve(raw)
                if conn != self.connection:
                    return False
                ring.put_response(rsp)
                if ring.push_responses():
                    self.notify(conn)
            return True
        except RingError as e:
            if conn == self.connection:
                self.fail(f"frontend broke the ring protocol: {e}")
            return False
        except (ValueError, IndexError, TypeError):
            if conn != self.connection:     # the ring went away under us (disconnect)
                return False
            raise

    def _serve(self, raw: bytes) -> bytes:
        op = raw[0]
        rid = _ID.unpack_from(raw, 4)[0]
        rop = op
        self.stats["requests"] += 1
        try:
            if op in (BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
                      BLKIF_OP_FLUSH_DISKCACHE):
                self._rw(raw, op)
            elif op == BLKIF_OP_INDIRECT:
                rop = raw[1]
                self._indirect(raw)
            elif op == BLKIF_OP_DISCARD:
                self._discard(raw)
            else:
                raise BadRequest(f"unknown operation {op}", BLKIF_RSP_EOPNOTSUPP)
            status = BLKIF_RSP_OKAY
        except BadRequest as e:
            status = e.status
            self._error(f"request {rid:#x} op {op}: {e}")
        except NotSupported as e:
            status = BLKIF_RSP_EOPNOTSUPP
            self._error(f"request {rid:#x} op {op}: not supported ({e})")
        except ImageIOError as e:
            status = BLKIF_RSP_ERROR
            self._error(f"request {rid:#x} op {op}: I/O error: {e}")
        return _RSP.pack(rid, rop, status)

    def _error(self, msg: str) -> None:
        self.stats["errors"] += 1
        self.errors_logged += 1
        if self.errors_logged <= MAX_LOGGED_ERRORS:
            self.log(msg + (" (further errors are not logged)"
                            if self.errors_logged == MAX_LOGGED_ERRORS else ""))

    def _rw(self, raw: bytes, op: int) -> None:
        _op, nseg, _handle, _rid, sector = _HDR.unpack_from(raw)
        if nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST:
            raise BadRequest(f"{nseg} segments (at most {BLKIF_MAX_SEGMENTS_PER_REQUEST})")
        segs = [_SEG.unpack_from(raw, 20 + 8 * i) for i in range(nseg)]
        if op in (BLKIF_OP_READ, BLKIF_OP_WRITE) and nseg == 0:
            raise BadRequest("no segments")
        if op != BLKIF_OP_READ and self.readonly:
            if not segs:
                return              # a flush of a read-only disk: nothing to do
            raise BadRequest("write to a read-only disk")
        if op in (BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE):
            self._check_segments(segs, sector)      # refuse before flushing anything
            self._flush()
            if not segs:
                return
        self._io(segs, sector, write=op != BLKIF_OP_READ)
        if op in (BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE):
            self._flush()           # Linux sends its FUA writes as a flush with data

    def _flush(self) -> None:
        self.stats["flushes"] += 1
        self.image.flush()

    def _indirect(self, raw: bytes) -> None:
        f = _INDIRECT.unpack_from(raw)
        iop, nseg, sector, grefs = f[1], f[2], f[4], f[6:]
        if iop not in (BLKIF_OP_READ, BLKIF_OP_WRITE):
            raise BadRequest(f"indirect operation {iop} (only read and write)")
        if nseg == 0 or nseg > MAX_INDIRECT_SEGMENTS:
            raise BadRequest(f"{nseg} indirect segments (1..{MAX_INDIRECT_SEGMENTS})")
        if iop == BLKIF_OP_WRITE and self.readonly:
            raise BadRequest("write to a read-only disk")
        from qemu_xenpv.gnttab import GrantError
        npages = (nseg + SEGS_PER_INDIRECT_FRAME - 1) // SEGS_PER_INDIRECT_FRAME
        table = bytearray()
        with self.hv.lock:
            for i in range(npages):
                n = min(SEGS_PER_INDIRECT_FRAME, nseg - i * SEGS_PER_INDIRECT_FRAME)
                try:
                    table += self.hv.grants.copy_from_grant(self.domid, grefs[i], 0, 8 * n)
                except GrantError as e:
                    raise BadRequest(f"indirect page grant {grefs[i]}: {e}") from None
        segs = [_SEG.unpack_from(table, 8 * i) for i in range(nseg)]
        self._io(segs, sector, write=iop == BLKIF_OP_WRITE)

    def _discard(self, raw: bytes) -> None:
        _op, flag, _h, _rid, sector, nr = _DISCARD.unpack_from(raw)
        if self.readonly:
            raise BadRequest("discard on a read-only disk")
        if not (self.image.can_discard and self.spec.discard):
            raise BadRequest("discard is not offered", BLKIF_RSP_EOPNOTSUPP)
        if flag & BLKIF_DISCARD_SECURE:
            raise BadRequest("secure discard is not offered", BLKIF_RSP_EOPNOTSUPP)
        if sector + nr > self.sectors:
            raise BadRequest(f"discard of sectors {sector}+{nr} is outside the disk "
                             f"({self.sectors} sectors)")
        self.stats["discards"] += 1
        self.image.discard(sector * SECTOR, nr * SECTOR)

    def _check_segments(self, segs, sector: int) -> int:
        total = 0
        for gref, first, last in segs:
            if last >= SECTORS_PER_PAGE or first > last:
                raise BadRequest(f"segment sectors {first}..{last} (0 <= first <= last <= 7)")
            total += last - first + 1
        if sector + total > self.sectors:
            raise BadRequest(f"sectors {sector}+{total} are outside the disk "
                             f"({self.sectors} sectors)")
        return total

    def _io(self, segs, sector: int, write: bool) -> None:
        """Map the segments' pages, do the I/O between them and the image,
        unmap.  Nothing is mapped until every segment has been checked."""
        from qemu_xenpv.gnttab import GrantError
        total = self._check_segments(segs, sector)
        grants = self.hv.grants
        maps: List = []                 # transient: unmapped after the I/O
        views: List = []
        try:
            pg = self.pgrants
            with self.hv.lock:
                for gref, first, last in segs:
                    m = pg.get(gref) if self.persistent else None
                    if m is None and self.persistent and len(pg) < MAX_PERSISTENT_GRANTS:
                        try:        # persistent grants are mapped writable, once
                            m = pg[gref] = grants.map_grant_ref(self.domid, gref)
                        except GrantError:
                            m = None
                    if m is None:
                        try:
                            m = grants.map_grant_ref(self.domid, gref, readonly=write)
                        except GrantError as e:
                            raise BadRequest(f"grant {gref}: {e}") from None
                        maps.append(m)
                    views.append(m.view)
            bufs = [v[first * SECTOR:(last + 1) * SECTOR]
                    for v, (_g, first, last) in zip(views, segs)]
            try:
                if write:
                    self.image.writev(bufs, sector * SECTOR)
                    self.stats["write_bytes"] += total * SECTOR
                else:
                    self.image.readv(bufs, sector * SECTOR)
                    self.stats["read_bytes"] += total * SECTOR
            finally:
                for b in bufs:
                    b.release()
        finally:
            if maps:
                with self.hv.lock:
                    for m in maps:
                        try:
                            grants.unmap_grant_ref(m)
                        except GrantError:
                            pass


# ---------------------------------------------------------------------------
# making disks: from the config, and hot plug
# ---------------------------------------------------------------------------
def _sock_dir() -> str:
    from qemu_xenpv.daemon import run_dir
    return str(run_dir() / "nbd")


def make_disk(dom, spec: DiskSpec) -> BlkBackend:
    """Open the image of ``spec`` for ``dom`` (XenPVError if it cannot be)."""
    image = open_image(spec, _sock_dir(), f"d{dom.domid}-{spec.devid}",
                       owner=f"domain '{dom.name}'")
    try:
        return BlkBackend(dom, spec, image)
    except BaseException:
        image.close()
        raise


def disks_from_config(dom) -> List[BlkBackend]:
    out = []
    try:
        for spec in getattr(dom.config, "disks", None) or []:
            try:
                out.append(make_disk(dom, spec))
            except XenPVError as e:
                raise XenPVError(f"disk {spec.vdev}: {e}") from None
    except BaseException:
        for d in out:
            d.release()
        raise
    return out


xenbus.register_backend("vbd", disks_from_config)


async def block_attach(dom, spec_text: str, base_dir: Optional[str] = None) -> BlkBackend:
    """qemu-xenpv block-attach: a new disk for a running domain."""
    try:
        spec = parse_disk_spec(spec_text, base_dir)
    except ValueError as e:
        raise XenPVError(f"disk {spec_text!r}: {e}") from None
    if getattr(dom, "devices", None) is None:
        raise XenPVError(f"domain '{dom.name}' has no PV devices (an HVM guest?)")
    if not dom.alive:
        raise XenPVError(f"domain '{dom.name}' is not running")
    if dom.devices.get("vbd", spec.devid) is not None:
        raise XenPVError(f"domain '{dom.name}' already has a disk {spec.vdev}")
    try:
        dev = make_disk(dom, spec)
    except XenPVError as e:
        raise XenPVError(f"disk {spec.vdev}: {e}") from None
    try:
        dom.devices.add(dev)
    except BaseException:
        dev.release()
        raise
    return dev


def find_disk(dom, vdev: str) -> BlkBackend:
    from .storage import vdev_to_devid
    try:
        devid = vdev_to_devid(vdev)
    except ValueError as e:
        raise XenPVError(str(e)) from None
    devices = getattr(dom, "devices", None)
    dev = devices.get("vbd", devid) if devices is not None else None
    if dev is None:
        raise XenPVError(f"domain '{dom.name}' has no disk {vdev}")
    return dev


async def block_detach(dom, vdev: str, force: bool = False) -> bool:
    """qemu-xenpv block-detach: ask the frontend to close, then remove."""
    dev = find_disk(dom, vdev)
    try:
        return await dom.devices.remove("vbd", dev.devid, force=force)
    except KeyError:
        raise XenPVError(f"disk {vdev} of domain '{dom.name}' is already being removed") \
            from None
