"""A fake model server for tests: Anthropic Messages, OpenAI Responses and Gemini, on loopback.

Standard library only. One ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a daemon
thread answers the streaming APIs that the real Claude Code, Codex and Gemini CLIs use, so
tests can run those real agents offline::

    with FakeModelServer() as server:
        env = claude_env(home, server.url, cwd)   # variables to add to the agent's environment
        ...
        server.requests  # [(method, path, parsed JSON body or None), ...]

What the fake model answers is scripted by the text of the last user message:

- contains ``RUN_TOOL`` (Claude only, when the request offers a ``Bash`` tool): a ``tool_use``
  block for ``Bash`` with ``{"command": "echo tool-ran", "description": "print"}`` and
  ``stop_reason`` ``tool_use``; the next request, which carries the ``tool_result``, gets the
  text ``TOOL-DONE``. Claude Code runs ``echo`` without asking; ``RUN_TOOL: <command>`` (to the
  end of the line) names another command, e.g. ``RUN_TOOL: touch tool-ran.txt``, which makes it
  show its permission dialog;
- otherwise the text ``FAKE-ANSWER: `` + the first 30 characters of the prompt (one line);
- contains ``SLOW``: the answer is streamed in 10 pieces 0.3 s apart;
- contains ``LATE``: nothing is answered for ``late_delay`` seconds (4) after the request
  came (the model "thinks" before its first words; side requests for structured output are
  answered at once; ``late_requests`` counts such requests as they arrive).

Side requests that ask for structured output (Claude's and Codex's session title, Gemini's
model router) get a JSON object that fits their schema, its strings filled with the answer.
Observed behaviour of the real CLIs against this server: ``docs/real-agents.md``.

The ``*_env`` functions prepare an isolated home for each real CLI (never the real user's files)
and return the environment variables to add when starting it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FAKE_ANTHROPIC_KEY = "sk-ant-fake-test-key-0123456789abcdefghij"
FAKE_OPENAI_KEY = "sk-fake-openai-test-key-0123456789"
FAKE_GEMINI_KEY = "fake-gemini-test-key-0123456789"
CODEX_KEY_VAR = "FAKE_MODELS_OPENAI_KEY"
FAKE_CODEX_MODEL = "gpt-5-fake"

TOOL_COMMAND = {"command": "echo tool-ran", "description": "print"}
_TOOL_LINE = re.compile(r"RUN_TOOL:[ \t]*(\S[^\r\n]*)")
SLOW_PIECES = 10
SLOW_DELAY = 0.3
LATE_DELAY = 4.0


# --- the scripted behaviour ------------------------------------------------------------------


def answer_text(prompt: str) -> str:
    """The fake model's plain answer to ``prompt``: one line."""
    head = " ".join(prompt.split())[:30]
    return f"FAKE-ANSWER: {head}"


def pieces(text: str, slow: bool) -> list[str]:
    """``text`` cut into the deltas to stream: 10 when slow, else 2 (fewer only for a shorter text)."""
    count = max(1, min(SLOW_PIECES if slow else 2, len(text)))
    bounds = [len(text) * i // count for i in range(count + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def value_for_schema(schema: Any, text: str) -> Any:
    """A minimal value matching a JSON schema: strings are ``text`` (for structured-output requests)."""
    if not isinstance(schema, dict):
        return text
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    kind = str(kind or "").lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: value_for_schema(sub, text) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    limit = schema.get("maxLength")
    return text[:limit] if isinstance(limit, int) else text


def tool_input(prompt: str) -> dict[str, str]:
    """The ``Bash`` input that a ``RUN_TOOL`` prompt asks for."""
    named = _TOOL_LINE.search(prompt)
    if named:
        return {"command": named.group(1).strip(), "description": "run"}
    return dict(TOOL_COMMAND)


def _is_reminder(text: str) -> bool:
    return text.lstrip().startswith("<system-reminder>")


def anthropic_last_user(body: dict[str, Any]) -> tuple[str, bool]:
    """(text of the last user message, whether it carries a ``tool_result``)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content, False
        texts: list[str] = []
        has_result = False
        for block in content or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result":
                has_result = True
            elif block.get("type") == "text" and not _is_reminder(block.get("text", "")):
                texts.append(block.get("text", ""))
        if not texts:  # only reminders: take them all rather than nothing
            texts = [
                b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"
            ]
        return "\n".join(texts), has_result
    return "", False


def openai_last_user(body: dict[str, Any]) -> str:
    """Text of the last user message of a Responses API request."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        texts = [c.get("text", "") for c in content or [] if isinstance(c, dict) and "text" in c]
        return "\n".join(texts)
    return ""


def gemini_last_user(body: dict[str, Any]) -> str:
    """Text of the last user turn of a Gemini request: its last text part.

    Gemini CLI puts its ``<session_context>`` part before the prompt in the same turn.
    """
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") != "user":
            continue
        texts = [p["text"] for p in content.get("parts") or [] if isinstance(p, dict) and "text" in p]
        if texts:
            return str(texts[-1])
    return ""


# --- the server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FakeModelServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --

    def _read_body(self) -> tuple[bytes, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw and self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self._read_chunked()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return raw, parsed

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            line = self.rfile.readline()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def _json(self, payload: Any, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, name: str | None, payload: Any) -> None:
        head = f"event: {name}\n" if name else ""
        self.wfile.write(f"{head}data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _late(self, prompt: str, side: bool = False) -> bool:
        """Wait before answering a ``LATE`` prompt (not a side request); False once the server
        is closing."""
        if "LATE" not in prompt or side:
            return True
        owner = self.server.owner
        with owner._lock:
            owner.late_requests += 1
        return not owner._closing.wait(owner.late_delay)

    def _pause(self, slow: bool) -> bool:
        """Wait between slow deltas; False once the server is closing."""
        if slow:
            owner = self.server.owner
            with owner._lock:
                owner.slow_pauses += 1
            return not owner._closing.wait(SLOW_DELAY)
        return True

    # -- dispatch --

    def do_HEAD(self) -> None:
        self.server.owner._record("HEAD", self.path, None)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.owner._record("GET", self.path, None)
        path = urlsplit(self.path).path
        if path.rstrip("/").endswith("/models"):
            self._json({"object": "list", "data": [], "models": [], "has_more": False})
        else:
            self._json({"ok": True})

    def do_DELETE(self) -> None:
        self.server.owner._record("DELETE", self.path, None)
        self._json({"ok": True})

    def do_POST(self) -> None:
        _raw, body = self._read_body()
        self.server.owner._record("POST", self.path, body)
        path = urlsplit(self.path).path
        body = body if isinstance(body, dict) else {}
        try:
            if path.endswith("/messages/count_tokens"):
                self._json({"input_tokens": 10})
            elif path.endswith("/messages"):
                self._anthropic(body)
            elif path.endswith("/responses"):
                self._openai(body)
            elif ":streamGenerateContent" in path:
                self._gemini(body, stream=True)
            elif ":generateContent" in path:
                self._gemini(body, stream=False)
            elif ":countTokens" in path:
                self._json({"totalTokens": 10})
            else:
                self._json({"ok": True})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- Anthropic Messages --

    def _anthropic(self, body: dict[str, Any]) -> None:
        prompt, has_result = anthropic_last_user(body)
        tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        model = body.get("model") or "claude-fake"
        slow = "SLOW" in prompt
        if has_result:
            kind, text = "text", "TOOL-DONE"
        elif "RUN_TOOL" in prompt and "Bash" in tools:
            kind, text = "tool", ""
        else:
            kind, text = "text", answer_text(prompt)
            wanted = (body.get("output_config") or {}).get("format") or {}
            if wanted.get("type") == "json_schema":  # structured output, e.g. the session title
                text = json.dumps(value_for_schema(wanted.get("schema"), text))
        msg_id = f"msg_fake_{uuid.uuid4().hex[:16]}"
        usage = {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if kind == "tool":
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_fake_{uuid.uuid4().hex[:16]}",
                "name": "Bash",
                "input": tool_input(prompt),
            }
            stop = "tool_use"
        else:
            block = {"type": "text", "text": text}
            stop = "end_turn"
        side = ((body.get("output_config") or {}).get("format") or {}).get("type") == "json_schema"
        if not self._late(prompt, side):
            return
        if not body.get("stream"):
            self._json(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [block],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
            return
        self._start_stream()
        start: dict[str, Any] = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        self._event("message_start", {"type": "message_start", "message": start})
        if kind == "tool":
            empty = {**block, "input": {}}
            self._event(
                "content_block_start", {"type": "content_block_start", "index": 0, "content_block": empty}
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        else:
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            for piece in pieces(text, slow):
                if not self._pause(slow):
                    return
                delta = {"type": "text_delta", "text": piece}
                self._event(
                    "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
                )
        self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        )
        self._event("message_stop", {"type": "message_stop"})

    # -- OpenAI Responses --

    def _openai(self, body: dict[str, Any]) -> None:
        prompt = openai_last_user(body)
        text = answer_text(prompt)
        wanted = (body.get("text") or {}).get("format") or {}
        if wanted.get("type") == "json_schema":  # structured output, e.g. Codex's thread title
            text = json.dumps(value_for_schema(wanted.get("schema"), text))
        slow = "SLOW" in prompt
        model = body.get("model") or FAKE_CODEX_MODEL
        resp_id = f"resp_fake_{uuid.uuid4().hex[:16]}"
        item_id = f"msg_fake_{uuid.uuid4().hex[:16]}"
        usage = {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15,
        }
        done_part = {"type": "output_text", "text": text, "annotations": []}
        done_item = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [done_part],
        }
        response = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model}
        if not self._late(prompt, wanted.get("type") == "json_schema"):
            return
        if not body.get("stream"):
            self._json({**response, "status": "completed", "output": [done_item], "usage": usage})
            return
        self._start_stream()
        seq = iter(range(1_000_000))

        def event(name: str, **fields: Any) -> None:
            self._event(name, {"type": name, "sequence_number": next(seq), **fields})

        event("response.created", response={**response, "status": "in_progress", "output": []})
        event(
            "response.output_item.added",
            output_index=0,
            item={
                "id": item_id,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        )
        event(
            "response.content_part.added",
            item_id=item_id,
            output_index=0,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        )
        for piece in pieces(text, slow):
            if not self._pause(slow):
                return
            event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=piece)
        event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text)
        event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=done_part)
        event("response.output_item.done", output_index=0, item=done_item)
        event(
            "response.completed",
            response={**response, "status": "completed", "output": [done_item], "usage": usage},
        )

    # -- Gemini --

    def _gemini(self, body: dict[str, Any], stream: bool) -> None:
        prompt = gemini_last_user(body)
        slow = "SLOW" in prompt
        config = body.get("generationConfig") or {}
        text = answer_text(prompt)
        if config.get("responseMimeType") == "application/json":
            # a side request wanting JSON (next-speaker check, model routing, ...): a harmless object
            schema = config.get("responseJsonSchema") or config.get("responseSchema")
            if schema:
                text = json.dumps(value_for_schema(schema, text))
            else:
                text = json.dumps({"next_speaker": "user", "reasoning": "fake model: the user speaks next"})
        usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}

        def chunk(piece: str, last: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
            if last:
                candidate["finishReason"] = "STOP"
            return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-fake"}

        if not self._late(prompt, config.get("responseMimeType") == "application/json"):
            return
        if not stream:
            self._json(chunk(text, True))
            return
        self._start_stream()
        # one chunk unless slow: Gemini CLI builds AfterAgent's prompt_response from the chunks
        # (joined with spaces, last repeated), so only a one-chunk answer comes back verbatim there
        parts = pieces(text, slow) if slow else [text]
        for i, piece in enumerate(parts):
            if not self._pause(slow):
                return
            self._event(None, chunk(piece, i == len(parts) - 1))


class FakeModelServer:
    """The fake model server, running in a daemon thread until :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[tuple[str, str, Any]] = []
        #: pauses between the deltas of slow answers so far (each follows a delta sent)
        self.slow_pauses = 0
        #: ``LATE`` requests received so far (counted before their answer is held back)
        self.late_requests = 0
        #: seconds a ``LATE`` answer is held back
        self.late_delay = LATE_DELAY
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fake-models", daemon=True
        )
        self._thread.start()

    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append((method, path, body))

    def requests_to(self, fragment: str) -> list[tuple[str, str, Any]]:
        """A snapshot of the requests whose path contains ``fragment``."""
        with self._lock:
            return [r for r in self.requests if fragment in r[1]]

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving (slow streams end early) and join the thread, waiting at most ``timeout``."""
        if self._closing.is_set():
            return
        self._closing.set()
        stopper = threading.Thread(target=self._server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout)
        self._thread.join(timeout)
        self._server.server_close()

    def __enter__(self) -> FakeModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- isolated homes for the real CLIs ------------------------------------------------------


def _common_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "NO_UPDATE_NOTIFIER": "1",
        "DISABLE_TELEMETRY": "1",
    }


def claude_env(home: Path, url: str, cwd: Path) -> dict[str, str]:
    """Write ``home/.claude.json`` (onboarded, fake key approved, ``cwd`` trusted); return env to add."""
    env = _common_env(home)
    state = {
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": [FAKE_ANTHROPIC_KEY[-20:]], "rejected": []},
        "projects": {str(cwd): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
    }
    (home / ".claude.json").write_text(json.dumps(state))
    env.update(
        {
            "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
    )
    return env


def codex_env(home: Path, url: str, cwd: Path) -> dict[str, str]:
    """Write ``$CODEX_HOME/config.toml`` (fake provider, ``cwd`` trusted); return env to add."""
    env = _common_env(home)
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    config = (
        f"model = {json.dumps(FAKE_CODEX_MODEL)}\n"
        'model_provider = "fake"\n'
        "check_for_update_on_startup = false\n"
        "\n"
        "[model_providers.fake]\n"
        'name = "fake"\n'
        f"base_url = {json.dumps(url.rstrip('/') + '/v1')}\n"
        f"env_key = {json.dumps(CODEX_KEY_VAR)}\n"
        'wire_api = "responses"\n'
        "\n"
        f"[projects.{json.dumps(str(cwd))}]\n"
        'trust_level = "trusted"\n'
    )
    (codex_home / "config.toml").write_text(config)
    env.update({"CODEX_HOME": str(codex_home), CODEX_KEY_VAR: FAKE_OPENAI_KEY})
    return env


def gemini_env(home: Path, url: str, cwd: Path) -> dict[str, str]:
    """Write ``home/.gemini/settings.json`` (API-key auth, no folder trust); return env to add.

    trio-bridge adds its hooks through a session home (``GEMINI_CLI_HOME``) linking to this one;
    ``GEMINI_CLI_SYSTEM_SETTINGS_PATH`` would not do (see ``docs/real-agents.md``).
    """
    env = _common_env(home)
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False},
    }
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    env.update({"GEMINI_API_KEY": FAKE_GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": url.rstrip("/")})
    return env


__all__ = [
    "FakeModelServer",
    "answer_text",
    "claude_env",
    "codex_env",
    "gemini_env",
]
