"""netback: the back end of Xen's split network driver (io/netif.h), built
on the shared xenbus mechanism (devices/xenbus.py).

One ``NetBackend`` per vif.  The guest's netfront shares a TX and an RX ring
(one page each, 256 slots) and one event channel; we serve ``request-rx-copy``
only (as every netfront of this century asks): frames for the guest are
grant-copied into the pages it posted on the RX ring.  Frames the guest sends
are grant-copied out of its TX slots and handed to a software switch
(devices/switch.py), which forwards them to other vifs of this daemon and,
for ``bridge=NAME``, to a TAP device on the host's bridge.

Protocol as Linux's xen-netback serves it:

* backend keys: ``feature-sg``, ``feature-rx-copy`` = 1, ``feature-rx-flip``
  = 0, ``feature-gso-tcpv4/6`` = 0 (see docs/devices.md: not worth it here),
  ``feature-ipv6-csum-offload``, ``feature-multicast-control`` = 0,
  ``feature-split-event-channels`` = 0, ``mac``, ``handle``, ``bridge``,
  ``ip``, ``type``, ``script``, ``hotplug-status``.
* frontend keys read: ``tx-ring-ref``, ``rx-ring-ref``, ``event-channel`` (or
  ``event-channel-tx`` + ``-rx``), ``request-rx-copy`` (must be 1),
  ``feature-rx-notify``, ``feature-sg``, ``feature-no-csum-offload``.
* TX: a packet is a first request (its ``size`` is the whole frame), any
  extra-info slots (NETTXF_extra_info), then data slots while
  NETTXF_more_data.  One response per slot consumed, in order (RSP_NULL for
  extra-info slots).  NETTXF_csum_blank travels with the frame.
* RX: a frame takes one slot per 4 KiB (more than one only with the
  frontend's ``feature-sg``), NETRXF_more_data on all but the last, status =
  bytes in that slot; NETRXF_csum_blank | NETRXF_data_validated for a
  partial-checksum frame (completed here for a frontend with
  ``feature-no-csum-offload``).

Hostile frontends: a bad grant reference, a frame shorter than an Ethernet
header, more than XEN_NETIF_NR_SLOTS_MIN slots or inconsistent sizes get
NETIF_RSP_ERROR; a slot crossing its page, a packet that runs past what
was posted, or ring index garbage disconnect the vif (xenbus ``fail()``,
Linux's xenvif_fatal_tx_err).  A frontend that posts no RX buffers has
frames queued (at most RX_QUEUE_MAX) and then dropped: the back end never
waits for a guest.  Work is done on the hypervisor's event loop in batches
(TX_BATCH packets, then the loop's other work runs).
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import random
import struct
import time
from typing import Dict, List, Optional

from qemu_xenpv.errors import ConfigError, XenPVError

from .switch import Port, get_switch, put_switch, mac_str, mac_bytes, ip_set, \
    complete_checksum, INTERNAL
from .xenbus import BackendDevice, BackRing, Frontend, RingError, XenbusError, \
    XenbusState, register_backend

log = logging.getLogger("qemu_xenpv.netback")

PAGE = 4096
ETH_HLEN = 14
MAX_SLOTS = 18                  # XEN_NETIF_NR_SLOTS_MIN: what every frontend may use
TX_BATCH = 64                   # packets per event-loop turn
RX_QUEUE_MAX = 256              # frames waiting for RX buffers, then drop
RX_RETRY = 0.01                 # poll for buffers of a frontend that does not notify

NETTXF_csum_blank, NETTXF_data_validated, NETTXF_more_data, NETTXF_extra_info = 1, 2, 4, 8
NETRXF_data_validated, NETRXF_csum_blank, NETRXF_more_data, NETRXF_extra_info = 1, 2, 4, 8
NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETIF_RSP_NULL = -2, -1, 0, 1
XEN_NETIF_EXTRA_FLAG_MORE = 1
EXTRA_TYPE_GSO, EXTRA_TYPE_MCAST_ADD, EXTRA_TYPE_MCAST_DEL = 1, 2, 3

TX_REQ = struct.Struct("<IHHHH")        # gref, offset, flags, id, size       (12)
TX_RSP = struct.Struct("<Hh")           # id, status                          (4)
RX_REQ = struct.Struct("<HHI")          # id, pad, gref                       (8)
RX_RSP = struct.Struct("<HHHh")         # id, offset, flags, status           (8)
XEN_OUI = (0x00, 0x16, 0x3E)


# ---------------------------------------------------------------------------
# configuration: vif = ['mac=00:16:3e:..,bridge=br0,ip=10.0.0.2', '']
# ---------------------------------------------------------------------------
VIF_KEYS = {"mac", "bridge", "ip", "vifname", "pcap"}
VIF_IGNORED = {"script", "type", "model", "rate", "backend", "gatewaydev", "accel",
               "devid", "uuid", "mtu", "forwarddev", "trusted", "coalesce"}


def random_mac(rng=None) -> str:
    """A MAC from Xen's OUI 00:16:3e, as libxl makes one (4th byte < 0x80)."""
    r = rng or random.SystemRandom()
    return "00:16:3e:%02x:%02x:%02x" % (r.randrange(0x80), r.randrange(256), r.randrange(256))


def parse_vif(spec, where: str = "vif", base: Optional[str] = None,
              warnings: Optional[list] = None) -> Dict[str, str]:
    """One xl vif spec ("k=v,k=v") as a dict with a MAC always set.
    ConfigError (one line) for anything wrong."""
    if not isinstance(spec, str):
        raise ConfigError(f"{where}: must be a string like 'mac=00:16:3e:01:02:03,bridge=br0', "
                          f"not {spec!r}")
    out: Dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"{where}: '{item}' is not key=value "
                              f"(known keys: {', '.join(sorted(VIF_KEYS))})")
        k, v = (x.strip() for x in item.split("=", 1))
        if k in VIF_IGNORED:
            if warnings is not None:
                warnings.append(f"{where}: '{k}' is not implemented by qemu-xenpv: ignored")
            continue
        if k not in VIF_KEYS:
            import difflib
            hint = difflib.get_close_matches(k, sorted(VIF_KEYS | VIF_IGNORED), 1)
            raise ConfigError(f"{where}: unknown key '{k}'" +
                              (f" (did you mean '{hint[0]}'?)" if hint else ""))
        out[k] = v
    if "mac" in out:
        try:
            mac = mac_bytes(out["mac"].lower())
        except ValueError:
            raise ConfigError(f"{where}: mac '{out['mac']}' is not a MAC address "
                              "(xx:xx:xx:xx:xx:xx, e.g. 00:16:3e:12:34:56)") from None
        if mac[0] & 1:
            raise ConfigError(f"{where}: mac {out['mac']} is a multicast address "
                              "(the first byte must be even)")
        if mac == bytes(6):
            raise ConfigError(f"{where}: mac 00:00:00:00:00:00 is not usable")
        out["mac"] = mac_str(mac)
    else:
        out["mac"] = random_mac()
    if "bridge" in out:
        from .tap import valid_ifname
        if not valid_ifname(out["bridge"]):
            raise ConfigError(f"{where}: bridge '{out['bridge']}' is not a valid interface name")
    if "vifname" in out:
        from .tap import valid_ifname
        if not valid_ifname(out["vifname"]):
            raise ConfigError(f"{where}: vifname '{out['vifname']}' is not a valid interface name")
    if "ip" in out:
        for word in out["ip"].split():
            try:
                ipaddress.ip_interface(word)
            except ValueError:
                raise ConfigError(f"{where}: ip '{word}' is not an IP address "
                                  "(e.g. ip=10.0.0.2 or ip=10.0.0.2/24)") from None
    if "pcap" in out:
        p = os.path.expanduser(out["pcap"])
        if base and not os.path.isabs(p):
            p = os.path.join(base, p)
        out["pcap"] = os.path.abspath(p)
    return out


def parse_vifs(value, path: str = "<config>", base: Optional[str] = None,
               warnings: Optional[list] = None) -> List[Dict[str, str]]:
    """The config's ``vif`` list; MACs must be unique."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: vif must be a list of strings, e.g. "
                          "vif = ['mac=00:16:3e:01:02:03,bridge=br0', '']")
    out = []
    for i, spec in enumerate(value):
        v = parse_vif(spec, f"{path}: vif {i}", base, warnings)
        if any(o["mac"] == v["mac"] for o in out):
            raise ConfigError(f"{path}: vif {i}: mac {v['mac']} is used twice")
        out.append(v)
    return out


def format_vif(v: Dict[str, str]) -> str:
    return ",".join(f"{k}={v[k]}" for k in ("mac", "bridge", "ip", "vifname", "pcap") if v.get(k))


# ---------------------------------------------------------------------------
# the back end
# ---------------------------------------------------------------------------
class VifPort(Port):
    """This vif as a port of its switch."""

    def __init__(self, be: "NetBackend"):
        super().__init__()
        self.be = be
        self.name = f"vif{be.domid}.{be.devid}"
        self.mac = mac_bytes(be.mac)
        self.allowed_ips = ip_set(be.spec.get("ip"))

    @property
    def accepts_partial(self) -> bool:
        return self.be.fe_csum

    def deliver(self, frame: bytes, partial: bool) -> None:
        self.be.to_guest(frame, partial)


class Stats:
    __slots__ = ("tx_packets", "tx_bytes", "tx_errors", "rx_packets", "rx_bytes",
                 "rx_dropped", "rx_errors")

    def __init__(self):
        for k in self.__slots__:
            setattr(self, k, 0)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


class NetBackend(BackendDevice):
    kind = "vif"

    def __init__(self, dom, devid: int, spec: Dict[str, str]):
        super().__init__(dom, devid)
        self.spec = dict(spec)
        self.mac = spec["mac"]
        self.bridge = spec.get("bridge")
        self.tx: Optional[BackRing] = None
        self.rx: Optional[BackRing] = None
        self.fe_sg = False
        self.fe_csum = True
        self.fe_rx_notify = False
        self.rxq: collections.deque = collections.deque()
        self.stats = Stats()
        self.port_obj: Optional[VifPort] = None
        self.switch = None
        self.pcap = None
        self._tx_scheduled = False
        self._rx_timer = None
        self.evtchn_remote = 0

    # ---- xenbus hooks ----
    def backend_entries(self):
        e = {"handle": self.devid, "mac": self.mac, "type": "vif",
             "script": "/etc/xen/scripts/vif-bridge", "bridge": self.bridge or INTERNAL,
             "hotplug-status": "connected"}
        if self.spec.get("ip"):
            e["ip"] = self.spec["ip"]
        return e

    def frontend_entries(self):
        return {"handle": self.devid, "mac": self.mac}

    def features(self):
        return {"feature-sg": 1, "feature-rx-copy": 1, "feature-rx-flip": 0,
                "feature-gso-tcpv4": 0, "feature-gso-tcpv6": 0,
                "feature-ipv6-csum-offload": 1, "feature-multicast-control": 0,
                "feature-dynamic-multicast-control": 0, "feature-split-event-channels": 0,
                "feature-ctrl-ring": 0}

    def create(self) -> None:
        """Join the switch first (a bridge switch makes its TAP now: a
        missing bridge or privilege fails the domain's creation), then the
        xenbus directories."""
        with self.hv.lock:
            try:
                self.switch = get_switch(self.hv, self.bridge)
            except XenPVError as e:
                raise XenPVError(f"vif {self.devid}: {e}") from None
            self.port_obj = VifPort(self)
            try:
                self.switch.attach(self.port_obj)
            except ValueError as e:
                put_switch(self.hv, self.switch)
                self.switch = None
                raise XenPVError(f"vif {self.devid}: {e}") from None
        if self.spec.get("pcap"):
            from .pcap import PcapWriter, PcapError
            try:
                self.pcap = PcapWriter(self.spec["pcap"])
            except PcapError as e:
                self._leave_switch()
                raise XenPVError(f"vif {self.devid}: {e}") from None
        super().create()

    def connect(self, fe: Frontend):
        if fe.read_int("request-rx-copy", 0, limit=1) != 1:
            raise XenbusError("frontend does not request-rx-copy (receive page flipping "
                              "is not supported)")
        if fe.read("multi-queue-num-queues") not in (None, b"1"):
            raise XenbusError("multi-queue was not offered (multi-queue-max-queues absent)")
        tx_ref = fe.read_int("tx-ring-ref")
        rx_ref = fe.read_int("rx-ring-ref")
        if tx_ref is None or rx_ref is None:
            raise XenbusError("frontend wrote no tx-ring-ref/rx-ring-ref")
        ev = fe.read_int("event-channel")
        ev_tx, ev_rx = fe.read_int("event-channel-tx"), fe.read_int("event-channel-rx")
        if ev is None and (ev_tx is None or ev_rx is None):
            raise XenbusError("frontend wrote no event-channel")
        self.fe_sg = bool(fe.read_int("feature-sg", 0))
        self.fe_csum = not fe.read_int("feature-no-csum-offload", 0)
        self.fe_rx_notify = bool(fe.read_int("feature-rx-notify", 0))
        self.tx = BackRing(self.map_ring([tx_ref]), TX_REQ.size, TX_RSP.size)
        self.rx = BackRing(self.map_ring([rx_ref]), RX_REQ.size, RX_RSP.size)
        conn = self.connection
        handler = lambda _p, c=conn: self._on_event(c)
        if ev is not None:
            self.bind_evtchn(ev, handler)
            self.evtchn_remote = ev
        else:
            # split channels were not offered; serve them anyway on one handler
            self.bind_evtchn(ev_tx, handler)
            self.evtchn_remote = ev_tx
            self._rx_port = self.hv.dom0.evtchn.dom0_bind(self.domid, ev_rx, handler)
        self.hv.call_soon(self._on_event, conn)     # requests already posted
        return {}

    def describe_connection(self) -> str:
        return (f"mac {self.mac}, switch {self.switch.name if self.switch else '-'}, "
                f"event channel {self.port}, rx-copy{', sg' if self.fe_sg else ''}"
                f"{', csum offload' if self.fe_csum else ''}")

    def disconnect(self) -> None:
        self.tx = self.rx = None
        self.rxq.clear()
        rp = getattr(self, "_rx_port", 0)
        if rp > 0:
            if self.hv.dom0.evtchn.ports[rp].state:
                self.hv.dom0.evtchn.close(rp)
            self._rx_port = 0
        if self._rx_timer is not None:
            self._rx_timer.cancel()
            self._rx_timer = None

    def _leave_switch(self) -> None:
        with self.hv.lock:
            if self.switch is not None:
                self.switch.detach(self.port_obj)
                put_switch(self.hv, self.switch)
                self.switch = None

    def release(self) -> None:
        self._leave_switch()
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None

    def info(self) -> dict:
        d = super().info()
        d.update({"mac": self.mac, "bridge": self.bridge, "switch": self.switch.name
                  if self.switch else None, "ip": self.spec.get("ip"),
                  "pcap": self.spec.get("pcap"), "evtchn": self.evtchn_remote,
                  "spoofed": self.port_obj.spoofed if self.port_obj else 0,
                  "tx_ring_ref": self._fe_int("tx-ring-ref"),
                  "rx_ring_ref": self._fe_int("rx-ring-ref"),
                  "be_path": self.be_path, **self.stats.as_dict()})
        return d

    def _fe_int(self, key: str):
        try:
            with self.hv.lock:
                return self.fe.read_int(key)
        except Exception:
            return None

    # ---- events (hypervisor loop, hv.lock taken here) ----
    def _on_event(self, conn: int) -> None:
        with self.hv.lock:
            if conn != self.connection or self.tx is None:
                return
            self._tx_scheduled = False
            self._service_tx()
            self._flush_rx()

    def _service_tx(self) -> None:
        ring = self.tx
        if ring is None:
            return
        done = 0
        notify = False
        try:
            while done < TX_BATCH:
                if not ring.unconsumed() and not ring.final_check():
                    break
                self._one_packet(ring)
                done += 1
                if self.tx is None:             # failed: disconnected
                    return
        except RingError as e:
            self.fail(f"TX ring index garbage: {e}")
            return
        if done:
            notify = ring.push_responses()
        if notify:
            self.notify(self.connection)
        if done >= TX_BATCH and not self._tx_scheduled:
            self._tx_scheduled = True           # fairness: the rest on the next turn
            self.hv.call_soon(self._on_event, self.connection)

    def _one_packet(self, ring: BackRing) -> None:
        """Consume one packet's slots, answer each, pass the frame on."""
        avail = ring.unconsumed()
        first = TX_REQ.unpack(ring.take_request())
        avail -= 1
        consumed = [("data", first)]
        flags = first[2]
        error = None
        fatal = None
        # extra-info slots follow the first request
        more_extra = bool(flags & NETTXF_extra_info)
        while more_extra:
            if avail <= 0:
                fatal = "extra-info slot past req_prod"
                break
            raw = ring.take_request()
            avail -= 1
            etype, eflags = raw[0], raw[1]
            consumed.append(("extra", None))
            if etype == EXTRA_TYPE_GSO:
                error = error or "GSO was not offered"
            elif etype not in (EXTRA_TYPE_MCAST_ADD, EXTRA_TYPE_MCAST_DEL):
                error = error or f"unknown extra-info type {etype}"
            more_extra = bool(eflags & XEN_NETIF_EXTRA_FLAG_MORE)
        # then the data slots
        last = first
        while fatal is None and last[2] & NETTXF_more_data:
            if avail <= 0:
                fatal = "packet runs past req_prod (NETTXF_more_data on the last request)"
                break
            last = TX_REQ.unpack(ring.take_request())
            avail -= 1
            consumed.append(("data", last))
        data_slots = [r for kind, r in consumed if kind == "data"]
        first_len = 0
        if fatal is None:
            sizes_rest = sum(r[4] for r in data_slots[1:])
            first_len = first[4] - sizes_rest
            for r in data_slots:
                ln = first_len if r is first else r[4]
                if ln >= 0 and r[1] + ln > PAGE:
                    fatal = f"slot {r[3]}: offset {r[1]} + size {ln} crosses the page"
                    break
        if fatal is not None:
            self._answer(ring, consumed, NETIF_RSP_ERROR)
            self.fail(f"TX: {fatal}")
            return
        if first[4] < ETH_HLEN:
            error = error or f"frame of {first[4]} bytes"
        elif len(data_slots) > MAX_SLOTS:
            error = error or f"{len(data_slots)} slots (at most {MAX_SLOTS})"
        elif first_len < 0:
            error = error or f"slot sizes add up to more than the frame ({first[4]})"
        frame = None
        if error is None:
            parts = []
            grants = self.hv.grants
            from qemu_xenpv.gnttab import GrantError
            try:
                for r in data_slots:
                    ln = first_len if r is first else r[4]
                    if ln:
                        parts.append(grants.copy_from_grant(self.domid, r[0], r[1], ln))
                frame = b"".join(parts)
            except GrantError as e:
                error = f"grant copy: {e}"
        if error is not None:
            self.stats.tx_errors += 1
            if self.stats.tx_errors in (1, 10, 100, 1000):
                self.log(f"TX error ({self.stats.tx_errors} so far): {error}")
            self._answer(ring, consumed, NETIF_RSP_ERROR)
            return
        self._answer(ring, consumed, NETIF_RSP_OKAY)
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(frame)
        partial = bool(flags & NETTXF_csum_blank)
        if self.pcap is not None:
            self.pcap.write(complete_checksum(frame) if partial else frame)
        if self.switch is not None:
            self.switch.input(self.port_obj, frame, partial)

    @staticmethod
    def _answer(ring: BackRing, consumed, status: int) -> None:
        for kind, r in consumed:
            if kind == "extra":
                ring.put_response(TX_RSP.pack(0, NETIF_RSP_NULL))
            else:
                ring.put_response(TX_RSP.pack(r[3], status))

    # ---- frames for the guest ----
    def to_guest(self, frame: bytes, partial: bool) -> None:
        """From the switch (hv.lock held): queue and try to deliver now."""
        if not self.connected or self.rx is None:
            self.stats.rx_dropped += 1
            return
        if len(frame) > PAGE and not self.fe_sg:
            self.stats.rx_dropped += 1          # would need more than one slot
            return
        if len(self.rxq) >= RX_QUEUE_MAX:
            self.stats.rx_dropped += 1          # the guest is not taking them
            return
        self.rxq.append((frame, partial))
        self._flush_rx()

    def _flush_rx(self) -> None:
        ring = self.rx
        if ring is None or not self.rxq:
            return
        delivered = 0
        try:
            while self.rxq:
                frame, partial = self.rxq[0]
                need = max(1, -(-len(frame) // PAGE))
                if ring.unconsumed() < need and not (ring.final_check() and
                                                     ring.unconsumed() >= need):
                    break
                self.rxq.popleft()
                self._put_frame(ring, frame, partial, need)
                delivered += 1
        except RingError as e:
            self.fail(f"RX ring index garbage: {e}")
            return
        if delivered and ring.push_responses():
            self.notify(self.connection)
        loop = getattr(self.hv, "loop", None)
        if self.rxq and self._rx_timer is None and loop is not None:
            # No buffers: look again soon (a frontend without feature-rx-notify
            # may never tell us); the queue is bounded, so nothing stalls.
            conn = self.connection

            def retry():
                self._rx_timer = None
                with self.hv.lock:
                    if conn == self.connection:
                        self._flush_rx()
            self._rx_timer = loop.call_later(RX_RETRY, retry)

    def _put_frame(self, ring: BackRing, frame: bytes, partial: bool, need: int) -> None:
        from qemu_xenpv.gnttab import GrantError
        if partial and not self.fe_csum:
            frame, partial = complete_checksum(frame), False
        ok = True
        for i in range(need):
            rid, _pad, gref = RX_REQ.unpack(ring.take_request())
            chunk = frame[i * PAGE:(i + 1) * PAGE]
            flags = 0
            if i == 0 and partial:
                flags |= NETRXF_csum_blank | NETRXF_data_validated
            if i + 1 < need:
                flags |= NETRXF_more_data
            status = len(chunk)
            try:
                self.hv.grants.copy_to_grant(self.domid, gref, 0, chunk)
            except GrantError:
                status = NETIF_RSP_ERROR
                ok = False
            ring.put_response(RX_RSP.pack(rid, 0, flags, status))
        if ok:
            self.stats.rx_packets += 1
            self.stats.rx_bytes += len(frame)
            if self.pcap is not None:
                self.pcap.write(complete_checksum(frame) if partial else frame)
        else:
            self.stats.rx_errors += 1


# ---------------------------------------------------------------------------
# creation from the config, hot plug
# ---------------------------------------------------------------------------
def vifs_from_config(dom) -> List[NetBackend]:
    specs = getattr(dom.config, "vifs", None) or []
    return [NetBackend(dom, int(s.get("devid", i)), s) for i, s in enumerate(specs)]


register_backend("vif", vifs_from_config)


def free_devid(dom) -> int:
    used = {d.devid for d in dom.devices.of_kind("vif")} if dom.devices else set()
    n = 0
    while n in used:
        n += 1
    return n


async def attach(dom, spec_text: str, cwd: Optional[str] = None) -> NetBackend:
    """network-attach: a new vif on a running domain."""
    if dom.devices is None or not dom.alive:
        raise XenPVError(f"domain '{dom.name}' is not running")
    spec = parse_vif(spec_text, "network-attach", cwd)
    for d in dom.devices.of_kind("vif"):
        if d.mac == spec["mac"]:
            raise XenPVError(f"domain '{dom.name}' already has a vif with mac {spec['mac']}")
    devid = free_devid(dom)
    spec["devid"] = str(devid)
    dev = NetBackend(dom, devid, spec)
    dom.devices.add(dev)
    cfg_vifs = getattr(dom.config, "vifs", None)
    if cfg_vifs is not None:
        cfg_vifs.append(spec)                   # a reboot keeps it, as libxl does
    return dev


def find_vif(dom, ref: str) -> NetBackend:
    vifs = dom.devices.of_kind("vif") if dom.devices else []
    for d in vifs:
        if str(d.devid) == str(ref) or d.mac == str(ref).lower():
            return d
    raise XenPVError(f"domain '{dom.name}' has no vif '{ref}' "
                     f"(it has: {', '.join(str(d.devid) for d in vifs) or 'none'})")


async def detach(dom, ref: str, force: bool = False) -> bool:
    """network-detach: ask the frontend to close, then remove the vif."""
    dev = find_vif(dom, ref)
    clean = await dom.devices.remove("vif", dev.devid, force=force)
    cfg_vifs = getattr(dom.config, "vifs", None)
    if cfg_vifs is not None:
        cfg_vifs[:] = [s for s in cfg_vifs if s.get("mac") != dev.mac]
    return clean


def list_vifs(dom) -> List[dict]:
    return [d.info() for d in (dom.devices.of_kind("vif") if dom.devices else [])]
