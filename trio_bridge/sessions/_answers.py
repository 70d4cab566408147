"""An agent's final answers, kept in its session's directory (``<state>/sessions/<id>/answers/``)
so that they outlive the daemon and can be served to other computers (the mesh's bot).

One file per turn, ``<turn>.txt`` (UTF-8), written whole (a temporary file renamed over it) and
private (0600); the last :data:`ANSWERS_KEPT` turns are kept, each at most
:data:`MAX_ANSWER_BYTES` (a longer answer is cut, and says so). Turns count from 1 per session
(the record's ``agent_answers`` is the last one); the file's time of change is the answer's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

__all__ = ["ANSWERS_KEPT", "MAX_ANSWER_BYTES", "Answer", "last_kept_turn", "read_answer", "write_answer"]

#: turns whose answers a session keeps (the older ones are removed)
ANSWERS_KEPT = 8
#: bytes of one answer kept at most (a hook's body is at most ``max_body_bytes`` anyway)
MAX_ANSWER_BYTES = 1 << 20
_CUT = "\n[… cut: the answer was longer than 1 MiB]"
_NAME = re.compile(r"([1-9][0-9]{0,17})\.txt")


@attrs.frozen
class Answer:
    #: its turn: 1 for the session's first answer, then counting up
    turn: int
    text: str
    #: when it was kept (seconds since the epoch)
    at: float


def write_answer(directory: Path, turn: int, text: str) -> None:
    """Keep ``text`` as the answer of ``turn`` in the session's ``directory``; forget the
    answers of turns :data:`ANSWERS_KEPT` or more before it. Blocking (run it in a thread).

    Raises:
        OSError: the disk refused.
    """
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_ANSWER_BYTES:
        cut = MAX_ANSWER_BYTES - len(_CUT.encode())
        data = data[:cut].decode("utf-8", "ignore").encode() + _CUT.encode()
    answers = directory / "answers"
    answers.mkdir(mode=0o700, exist_ok=True)
    partial = answers / f".{turn}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, answers / f"{turn}.txt")
    for entry in answers.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is not None and int(match[1]) <= turn - ANSWERS_KEPT:
            entry.unlink(missing_ok=True)


def read_answer(directory: Path, turn: int) -> Answer | None:
    """The answer of ``turn`` kept in the session's ``directory`` (None: none kept). Blocking.

    Raises:
        OSError: the disk refused (other than the file not being there).
    """
    if turn < 1:
        return None
    path = directory / "answers" / f"{turn}.txt"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with open(fd, "rb") as f:
        at = os.fstat(f.fileno()).st_mtime
        data = f.read(MAX_ANSWER_BYTES + 1)
    return Answer(turn, data[:MAX_ANSWER_BYTES].decode("utf-8", "replace"), at)


def last_kept_turn(directory: Path) -> int:
    """The highest turn whose answer is kept in the session's ``directory`` (0: none). A daemon
    that stopped between keeping an answer and counting it in the record finds it here, so the
    next answer does not take (and overwrite) its turn. Blocking, but a listing of at most
    :data:`ANSWERS_KEPT` names.
    """
    try:
        names = os.listdir(directory / "answers")
    except (FileNotFoundError, NotADirectoryError):
        return 0
    turns = [int(match[1]) for name in names if (match := _NAME.fullmatch(name)) is not None]
    return max(turns, default=0)
