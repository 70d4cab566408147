"""The Redis mesh: several computers, one view. Imported only when ``redis`` is set (it loads
redis-py and trio-asyncio)."""

from ._redis import Redis, RedisUnavailableError, open_redis, scan_keys
from .computers import Computer, DuplicateComputerError, Mesh, open_mesh

__all__ = [
    "Computer",
    "DuplicateComputerError",
    "Mesh",
    "Redis",
    "RedisUnavailableError",
    "open_mesh",
    "open_redis",
    "scan_keys",
]
