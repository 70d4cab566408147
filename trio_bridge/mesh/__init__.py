"""The Redis mesh: several computers, one view. Imported only when ``redis`` is set (it loads
redis-py and trio-asyncio).

Rooms: :mod:`.keys` (every Redis key and what it holds), :mod:`.errors` (what the mesh raises),
:mod:`._redis` (the only Redis client), :mod:`._seal` (signatures), :mod:`.computers`
(membership, heartbeats, discovery), :mod:`.rpc` (requests between computers), :mod:`.relay`
(a session's output between computers, as a feed), :mod:`.events` (lifecycle events).
"""

from ._redis import Redis, open_redis, scan_keys
from .computers import Computer, Mesh, open_mesh
from .errors import (
    ComputerUnavailableError,
    DuplicateComputerError,
    MeshError,
    RedisRefusedError,
    RedisUnavailableError,
    RelayFailedError,
    UnknownComputerError,
)
from .relay import RelayFeed

__all__ = [
    "Computer",
    "ComputerUnavailableError",
    "DuplicateComputerError",
    "Mesh",
    "MeshError",
    "Redis",
    "RedisRefusedError",
    "RedisUnavailableError",
    "RelayFailedError",
    "RelayFeed",
    "UnknownComputerError",
    "open_mesh",
    "open_redis",
    "scan_keys",
]
