"""The mesh's errors, raised where Redis or another computer answers and caught by type.

Nothing above the mesh sees a redis-py exception or has to read a message: connection trouble is
:class:`RedisUnavailableError`, a command Redis refuses is :class:`RedisRefusedError` (with
Redis's error code; the codes the mesh acts on have their own subclasses), and what another
computer does or does not answer has its own class. All are :class:`MeshError`.
"""

from __future__ import annotations

__all__ = [
    "ComputerUnavailableError",
    "DuplicateComputerError",
    "GroupExistsError",
    "MeshError",
    "NoGroupError",
    "RedisRefusedError",
    "RedisUnavailableError",
    "RelayFailedError",
    "UnknownComputerError",
]


class MeshError(Exception):
    """Something the mesh could not do (the message is one line, for a person)."""


class RedisUnavailableError(MeshError):
    """Redis cannot be reached (or broke the connection); the message names the URL."""


class RedisRefusedError(MeshError):
    """Redis answered a command with an error; ``code`` is its first word (``WRONGTYPE``,
    ``NOGROUP``...), empty when it has none."""

    def __init__(self, command: str, code: str, message: str) -> None:
        super().__init__(f"Redis refused {command}: {message}")
        self.command = command
        self.code = code

    @staticmethod
    def of(command: str, message: str, reply: str) -> RedisRefusedError:
        """The error for Redis's error ``reply`` (``message`` says it all, for people): of the
        subclass for its code, if it has one."""
        code = reply.split(" ", 1)[0]
        if not code.isupper():
            code = ""
        kind = _BY_CODE.get(code, RedisRefusedError)
        return kind(command, code, message)


class NoGroupError(RedisRefusedError):
    """``NOGROUP``: the stream or its consumer group is gone (Redis restarted empty)."""


class GroupExistsError(RedisRefusedError):
    """``BUSYGROUP``: the consumer group exists already."""


_BY_CODE: dict[str, type[RedisRefusedError]] = {"NOGROUP": NoGroupError, "BUSYGROUP": GroupExistsError}


class UnknownComputerError(MeshError, LookupError):
    """No computer of that name ever joined the mesh."""


class ComputerUnavailableError(MeshError):
    """The computer is offline, or did not answer within the limit (the message says which)."""


class DuplicateComputerError(MeshError):
    """Another daemon runs under this computer name (one line, saying where)."""


class RelayFailedError(MeshError):
    """The computer of a session refused to relay its output, or to give a range of it (the
    message has its status and words)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
