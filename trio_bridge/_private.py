"""Directories and files that only their owner reads: the daemon's state and sockets.

The state directory holds every session's output and the API token; the runtime directory the
API socket, which is the owner's door without a token. A directory someone else owns (or can
write to) could hold links that make the daemon write where that someone wants, or a socket of
theirs that collects a client's token: such a directory is refused, never "fixed".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnsafeDirectoryError", "make_private_dir", "privatize_tree"]


class UnsafeDirectoryError(Exception):
    """A state or runtime directory the daemon must not use (one line, saying why)."""


def make_private_dir(path: Path, what: str) -> None:
    """Make sure ``path`` is a directory of this user's, mode 0700 (made if missing).

    Raises:
        UnsafeDirectoryError: it belongs to another user, others can write to it, it is not a
            directory, or it cannot be made.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        link = path.lstat()
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (os.geteuid(), 0):
            raise UnsafeDirectoryError(f"{what} {path} is a link owned by user {link.st_uid}; not using it")
        info = path.stat()
    except OSError as exc:
        raise UnsafeDirectoryError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(f"{what} {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectoryError(
            f"{what} {path} belongs to user {info.st_uid}, not to this user ({os.geteuid()}); not using it"
        )
    if info.st_mode & 0o022:
        raise UnsafeDirectoryError(
            f"{what} {path} can be written by others (mode {info.st_mode & 0o777:o}); "
            "not using it (check what is in it, then chmod 700 it)"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)


def privatize_tree(root: Path) -> int:
    """Take group and other permissions off everything of ours under ``root`` (made by an
    earlier version, or under another umask); links are left alone. Returns how many changed."""
    changed = 0
    me = os.geteuid()
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode) or info.st_uid != me or not info.st_mode & 0o077:
                    continue
                os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
                changed += 1
            except OSError:
                continue  # gone meanwhile
    return changed
