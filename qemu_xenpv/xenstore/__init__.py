"""XenStore: the daemon engine and its ring transport.

* :mod:`.wire`     -- the xs_wire.h ABI (types, header, errors, ring layout).
* :mod:`.nodes`    -- nodes, permissions, path rules.
* :mod:`.engine`   -- :class:`XenStore`, the store (transport independent).
* :mod:`.protocol` -- wire requests -> engine operations (dispatch table).
* :mod:`.ring`     -- :class:`RingConnection`, the shared-page transport.

Typical use (domain builder / hypervisor side)::

    store = XenStore(hooks)
    store.write("/local/domain/1/name", "guest")
    conn = store.connect(1)
    ring = RingConnection(store, conn, page_view, notify=kick_evtchn)
    ...
    ring.process()          # on every event-channel kick from the guest
"""

from .engine import DEFAULT_QUOTAS, SUPPORTED_FEATURES, Connection, Dom0Transaction, XenStore
from .nodes import Perm, XenStoreError
from .ring import RingConnection
from .wire import Message, XsType

__all__ = [
    "XenStore", "Connection", "Dom0Transaction", "RingConnection", "XenStoreError",
    "Perm", "Message", "XsType", "DEFAULT_QUOTAS", "SUPPORTED_FEATURES",
]
