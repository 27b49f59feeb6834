"""Binary layouts declared once with construct, usable two ways.

``construct`` gives the readable declaration, building and parsing; hot
paths (hypercall arguments, the mailbox) use a precompiled ``struct.Struct``
derived from the same declaration, because construct costs tens of
microseconds per parse (measured in ``make bench``).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, Tuple

import construct as c

_FMT = {
    (1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
    (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q",
}


class Layout:
    """A fixed-size little-endian structure.

    ``Layout("name", ("field", c.Int32ul), ("arr", c.Array(4, c.Int32ul)),
    ("raw", c.Bytes(16)), (None, c.Padding(4)))``
    """

    def __init__(self, name: str, *fields: Tuple[Any, c.Construct]):
        self.name = name
        self.construct = c.Struct(*[(f / sub) if f else sub for f, sub in fields])
        self.offsets: Dict[str, int] = {}
        self._names = []        # (name, count or None, is_bytes)
        fmt = "<"
        off = 0
        for fname, sub in fields:
            size = sub.sizeof()
            if fname:
                self.offsets[fname] = off
            if fname is None:
                fmt += f"{size}x"
            elif isinstance(sub, c.FormatField):
                fmt += _FMT[(sub.length, sub.fmtstr[-1].islower())]
                self._names.append((fname, None, False))
            elif isinstance(sub, c.Array):
                inner = sub.subcon
                if not isinstance(inner, c.FormatField):
                    raise TypeError(f"{name}.{fname}: arrays of {inner} not supported")
                fmt += f"{sub.count}" + _FMT[(inner.length, inner.fmtstr[-1].islower())]
                self._names.append((fname, sub.count, False))
            elif type(sub).__name__ == "Bytes":
                fmt += f"{size}s"
                self._names.append((fname, None, True))
            else:
                raise TypeError(f"{name}.{fname}: unsupported field type {sub}")
            off += size
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        # flat layouts (only integer fields) take the fast paths below
        self._flat = all(count is None and not is_bytes for _, count, is_bytes in self._names)
        self._flat_names = tuple(n for n, _, _ in self._names)
        if self.size != self.construct.sizeof():
            raise AssertionError(f"{name}: struct {self.size} != construct {self.construct.sizeof()}")

    def unpack(self, buf, offset: int = 0) -> Dict[str, Any]:
        vals = self.struct.unpack_from(buf, offset)
        if self._flat:
            return dict(zip(self._flat_names, vals))
        out: Dict[str, Any] = {}
        i = 0
        for fname, count, _ in self._names:
            if count is None:
                out[fname] = vals[i]
                i += 1
            else:
                out[fname] = list(vals[i:i + count])
                i += count
        return out

    def pack(self, values: Dict[str, Any]) -> bytes:
        if self._flat:
            get = values.get
            return self.struct.pack(*[get(n) or 0 for n in self._flat_names])
        flat = []
        for fname, count, is_bytes in self._names:
            v = values.get(fname, b"" if is_bytes else (None if count is None else []))
            if count is None:
                flat.append(v if v is not None else 0)
            else:
                v = list(v) + [0] * (count - len(v))
                flat.extend(v[:count])
        return self.struct.pack(*flat)

    def parse(self, data: bytes):
        """Full construct parse (slow; for tests and tools)."""
        return self.construct.parse(data)

    def field_names(self) -> Iterable[str]:
        return self.offsets.keys()

    def __repr__(self) -> str:
        return f"<Layout {self.name} size={self.size}>"
