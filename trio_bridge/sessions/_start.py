"""What a new session is made of before it starts: its directory, its agent's launch (hooks
wired in the session's own directory), its :class:`SessionSpec` and its first record."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from ..agents import AgentState, launch
from ..tmux import SessionSpec
from ._files import pipe_command
from ._stdin import make_session_fifo
from .agents import AgentStart, agent_title
from .store import SessionRecord, SessionState

__all__ = ["Prepared", "prepare_start"]


@attrs.frozen
class Prepared:
    """A session ready to be created: nothing of it is in tmux or the store yet."""

    spec: SessionSpec
    #: its record, state ``starting``
    record: SessionRecord
    directory: Path
    #: an agent started with a prompt and no start hook to say so (Codex): its first turn runs now
    first_turn: bool


async def prepare_start(
    directory: Path,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None,
    title: str | None,
    width: int,
    height: int,
    origin: str,
    agent: AgentStart | None,
    name: str | None,
    segment_size: int,
    cleanup_within: float,
    stdin_pipe: bool = False,
) -> Prepared:
    """Make the session's directory (named by its id) and, for an agent, launch files; with
    ``stdin_pipe``, the FIFO its command reads as stdin (:mod:`._stdin`); build its spec and
    record (whose command is ``argv`` as given: the FIFO is the start script's business). What
    fails removes the directory again (within ``cleanup_within`` seconds, shielded: no record
    would name it, and retention would never remove it).

    Raises:
        OSError (a full disk); ValueError (a bad spec); what the agent's launch raises.
    """
    session_id = directory.name
    await trio.Path(directory / "log").mkdir(parents=True)
    stdin_path = None
    if stdin_pipe:
        try:
            stdin_path = make_session_fifo(directory)
        except BaseException:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + cleanup_within):
                await trio.to_thread.run_sync(shutil.rmtree, directory, True)
            raise
    unset_env: tuple[str, ...] = ()
    if agent is not None:
        try:
            launched = await trio.to_thread.run_sync(
                lambda: launch(
                    agent.profile, directory / "agent", model=agent.model, prompt=agent.prompt,
                    native_id=agent.native_id, extra_args=agent.extra_args,
                    environment={**os.environ, **(env or {})},
                )
            )  # fmt: skip
        except BaseException:
            # no record names this directory: retention would never remove it
            with trio.CancelScope(shield=True, deadline=trio.current_time() + cleanup_within):
                await trio.to_thread.run_sync(shutil.rmtree, directory, True)
            raise
        argv, unset_env = launched.argv, launched.unset_env
        # the profile's hook wiring (e.g. GEMINI_CLI_HOME) wins over the caller's
        env = {**(env or {}), **launched.env}
        if title is None:
            title = agent_title(agent)
    # started with a prompt and no start hook to say so (Codex): its first turn runs now
    first_turn = agent is not None and agent.prompt is not None and not agent.profile.start_hook
    spec = SessionSpec(
        argv, cwd, directory / "exit", env or {}, width=width, height=height, session_id=session_id,
        pipe_command=pipe_command(directory, segment_size), unset_env=unset_env, stdin_path=stdin_path,
    )  # fmt: skip
    record = SessionRecord(
        id=session_id, title=title or " ".join(argv), command=tuple(argv), cwd=str(cwd),
        env_keys=tuple(sorted(env or {})), created_at=time.time(), state=SessionState.STARTING,
        origin=origin, tmux_name=spec.name,
        agent=agent.profile.name if agent is not None else None,
        agent_state=(
            None if agent is None else str(AgentState.WORKING if first_turn else AgentState.STARTING)
        ),
        native_id=agent.native_id if agent is not None else None, name=name,
    )  # fmt: skip
    return Prepared(spec, record, directory, first_turn)
