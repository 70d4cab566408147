"""Property-based fuzzing of the HTTP API, driven by its own OpenAPI document.

A real daemon serves the API on 127.0.0.1 (TCP) in the test's trio loop; the document is
fetched from it (``/v1/openapi.json``) and every operation in it is fuzzed with Hypothesis
over real HTTP. Whatever the request, the API must answer:

* never with a 5xx (nor leave a request unanswered for ``REQUEST_TIMEOUT`` seconds);
* every error as JSON ``{"error": {"code": str, "message": str}}``, with no traceback text;
* after a refused (4xx) request, the same sessions as before it: the same ids, and the same
  states for the sessions whose state cannot change by itself;
* a success with a status the document names, and a JSON success body that conforms to the
  document's schema for it.

Why Hypothesis with our own small ``from_schema``, not schemathesis or hypothesis-jsonschema:
hypothesis-jsonschema's last release (0.23.1) fails with the Hypothesis this project uses on
any object schema (``AttributeError: 'many' object has no attribute 'more'``); schemathesis
would bring 13 more packages (a compiled JSON Schema validator, requests, its own runner) and
generates whole requests itself, so keeping it from starting a harmful session would take
hooks into its case generation. msgspec emits a small subset of JSON Schema, which
``from_schema`` (values) and ``conforms`` (checks) cover in ~100 lines; both fail loudly on a
keyword they do not know, so a richer document cannot be fuzzed wrong silently. No new
dependency: Hypothesis and httpx are already there. (schemathesis now runs as well, in
tests/api/test_openapi_schemathesis.py, with hooks that keep its sessions harmless: it checks the
document against the API; this fuzz adds the broken bodies, headers and state checks above.)

What is sent, per operation: path parameters (``session_id`` is a real session's id half of
the time, else odd text: empty, ``..``, ``a/b``, NUL, 300 characters...), query parameters
(left out half of the time, else valid for their schema, odd strings, or random text; an
unknown parameter, or one twice, now and then), and a JSON body: valid for its schema,
valid but for one field (dropped, added, or replaced by arbitrary JSON), arbitrary JSON, or
raw bytes (not JSON, empty, ``NaN``, a lone surrogate, another content type, larger than the
daemon's limit). Streams get a fuzzed ``Last-Event-ID`` header too. ``EXAMPLES`` requests
per operation, ``derandomize=True`` and no example database: every run sends the same
requests. Then two fixed passes: every path with each method it does not document, and
``edge_cases`` (the classic broken bodies, oversized input, odd ``Last-Event-ID``s) on the
real sessions. A failure is shrunk by Hypothesis to a minimal request, which the test prints
(method, URL, headers, body); every operation is fuzzed even after one failed, and the test
fails at the end with all of them.

How it runs: the daemon stays in the test's trio loop; the fuzz (synchronous Hypothesis
tests, a synchronous httpx client) runs in a worker thread. Each request has a connection of
its own: see ``fuzz_everything``.

Safety: sessions are created only with ``["true", ...]`` (any arguments), ``["sleep",
"30"]``, or a shell line ``true`` / ``sleep 30`` / ``exit 3``, always in a directory under
``tmp_path`` (the test's cwd is there too), and the environment variables the API would
accept are renamed ``TBFUZZ_<name>``; a field the API would refuse is left as drawn. Input
and keys go only to the known ``cat`` session (in raw mode, so a fuzzed ``^C``/``^D``/``^Z`` is
just a byte and it lives through the fuzz) and to the exited one. ``DELETE`` targets only the
exited session, three ``sleep`` sessions made for it, and ids that do not exist. At the end
every session still running is killed through the API.

Streams: the Server-Sent Events operations (``/v1/events``, ``/v1/sessions/{session_id}/stream``;
found in the document by their ``text/event-stream`` response) are fuzzed like the others
but only their status and headers are read: a 200 is closed at once, an error is read and
checked. The WebSocket route (``/ws``) is not in the document and is not fuzzed here.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_bridge.tmux.server import is_env_name

from .._api import running_daemon
from ..conftest import Sandbox

#: examples per operation
EXAMPLES = 30
#: seconds any one request may take (``wait`` timeouts are capped far below)
REQUEST_TIMEOUT = 10.0
#: states a session never leaves by itself
STABLE_STATES = {"exited", "killed", "lost"}
SAFE_COMMANDS = [["true"], ["sleep", "30"]]
SAFE_SHELLS = ["true", "sleep 30", "exit 3"]
#: strings that have broken servers before
TRICKY = [
    "", " ", "0", "-1", "1e309", "nan", "NaN", "inf", "-inf", "null", "true", "*", ",", "²", "٣",
    "\0", "\x1b[31m", "\r\n", "\ud800", "é", "../..", "%00", "99999999999999999999", "a" * 4096,
]  # fmt: skip
#: mixed into every drawn string. Hypothesis starts from (and keeps coming back to) the
#: simplest choices, so the simplest string is a key name: the simplest ``keys`` request is valid
WORDS = ["Enter", "Up", "F12", "BSpace", "Escape", "C-c", "C-d", "M-x", "C-M-a", "a", "Z", *TRICKY]
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(TRICKY)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
#: header values (bytes: hypercorn reads them as latin-1, so "\xb2" arrives as "²")
HEADER_VALUES = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(lambda n: str(n).encode()),
    st.sampled_from(["", "-1", "1.5", "0x10", "7", "²", "٣", "end"]).map(
        lambda s: s.encode("latin-1", "replace")
    ),
    # what h11 lets a client send: no control characters, no space at either end
    st.text(st.characters(codec="latin-1", categories=["L", "N", "P", "S", "Zs"]), max_size=12).map(
        lambda s: s.strip().encode("latin-1")
    ),
)


# -- the document ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[dict[str, Any], ...]
    body_schema: dict[str, Any] | None
    responses: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def streaming(self) -> bool:
        return "text/event-stream" in self.responses.get("200", {}).get("content", {})

    def params(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.parameters if p["in"] == where]


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, items in document["paths"].items():
        for method, operation in items.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            found.append(
                Operation(
                    method.upper(),
                    path,
                    tuple(operation.get("parameters", [])),
                    body["schema"] if body else None,
                    operation["responses"],
                )
            )
    # DELETE last: it kills sessions the other operations may still want running.
    return sorted(found, key=lambda op: op.method == "DELETE")


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


REF_PREFIX = "#/components/schemas/"


def dangling_refs(document: dict[str, Any]) -> list[str]:
    schemas = document.get("components", {}).get("schemas", {})
    return sorted(
        {r for r in refs(document) if not (r.startswith(REF_PREFIX) and r[len(REF_PREFIX) :] in schemas)}
    )


#: the JSON Schema keywords msgspec emits, which is all `from_schema` and `conforms` know
KEYWORDS = {
    "$ref", "anyOf", "type", "properties", "required", "additionalProperties", "items", "minimum",
    "maximum", "minLength", "maxLength", "minItems", "maxItems", "format", "default", "title",
    "description", "pattern", "enum", "propertyNames",
}  # fmt: skip


def resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` followed (a ref to a missing component: anything goes;
    ``test_openapi_refs_resolve`` reports those)."""
    unknown = set(schema) - KEYWORDS
    assert not unknown, f"the fuzz does not know the JSON Schema keywords {unknown}: teach it"
    if "$ref" in schema:
        return resolve(components.get(schema["$ref"].removeprefix(REF_PREFIX), {}), components)
    return schema


def matching(pattern: str) -> st.SearchStrategy[str]:
    """Text that matches ``pattern`` and is valid Unicode (a negated class also yields lone
    surrogates, which the document's patterns leave to the API: it refuses them everywhere)."""
    return st.from_regex(pattern).filter(lambda t: not re.search("[\ud800-\udfff]", t))


def from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for ``schema``: lengths and numbers reach their limits, ints can be huge.

    (hypothesis-jsonschema does this in general, but its last release, 0.23.1, fails with
    this Hypothesis on any object schema: ``'many' object has no attribute 'more'``.)"""
    schema = resolve(schema, components)
    if "anyOf" in schema:
        return st.one_of([from_schema(option, components) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        edges = [v for v in (low, high) if v is not None]
        return st.integers(low, high) | st.sampled_from(edges) if edges else st.integers(low, high)
    if kind == "number":
        return st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kind == "string" and "pattern" in schema:
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
        return matching(schema["pattern"]).filter(lambda t: shortest <= len(t) <= (longest or len(t)))
    if kind == "string":
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
        text = st.text(min_size=shortest, max_size=max(shortest, min(longest or 20, 20)))
        hints = [t for t in WORDS if shortest <= len(t) <= (longest or len(t))]
        text = st.sampled_from(hints) | text if hints else text
        return text | st.text(min_size=longest, max_size=longest) if longest else text
    if kind == "array":
        shortest = schema.get("minItems", 0)
        longest = min(schema.get("maxItems", shortest + 4), shortest + 4)
        return st.lists(from_schema(schema.get("items", {}), components), min_size=shortest, max_size=longest)
    if kind == "object":
        properties = {k: from_schema(v, components) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        fixed = st.fixed_dictionaries(
            {k: v for k, v in properties.items() if k in required},
            optional={k: v for k, v in properties.items() if k not in required},
        )
        more = schema.get("additionalProperties", True)
        if not isinstance(more, dict):
            return fixed
        names = schema.get("propertyNames", {})
        keys = (
            matching(names["pattern"]).filter(lambda k: len(k) <= 8)
            if "pattern" in names
            else st.text(max_size=8)
        )
        extra = st.dictionaries(keys, from_schema(more, components), max_size=3)
        return st.tuples(fixed, extra).map(lambda both: {**both[1], **both[0]})
    assert kind is None, f"the fuzz does not know the JSON Schema type {kind!r}: teach it"
    return JSON_VALUES


def conforms(value: Any, schema: dict[str, Any], components: dict[str, Any], where: str = "$") -> str | None:
    """Why ``value`` does not match ``schema`` (None: it does)."""
    schema = resolve(schema, components)
    if "anyOf" in schema:
        reasons = [conforms(value, option, components, where) for option in schema["anyOf"]]
        return None if None in reasons else f"{where}: matches none of {schema['anyOf']}"
    kind = schema.get("type")
    checks = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kind is not None and not checks[kind](value):
        return f"{where}: {value!r} is not of type {kind}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is none of {schema['enum']}"
    if kind == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{where}: {value!r} does not match {schema['pattern']!r}"
    if kind in ("integer", "number") and not schema.get("minimum", value) <= value <= schema.get(
        "maximum", value
    ):
        return f"{where}: {value!r} is out of range"
    if kind == "string" and not schema.get("minLength", 0) <= len(value) <= schema.get(
        "maxLength", len(value)
    ):
        return f"{where}: {value!r} has the wrong length"
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return f"{where}: the wrong number of items"
        for i, item in enumerate(value):
            if reason := conforms(item, schema.get("items", {}), components, f"{where}[{i}]"):
                return reason
    if kind == "object":
        properties = schema.get("properties", {})
        if missing := set(schema.get("required", [])) - set(value):
            return f"{where}: {sorted(missing)} missing"
        names = schema.get("propertyNames", {}).get("pattern")
        for key, item in value.items():
            if names is not None and key not in properties and not re.search(names, key):
                return f"{where}: the key {key!r} does not match {names!r}"
            sub = properties.get(key, schema.get("additionalProperties", True))
            if sub is False:
                return f"{where}: unexpected {key!r}"
            if isinstance(sub, dict) and (reason := conforms(item, sub, components, f"{where}.{key}")):
                return reason
    return None


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request, as Hypothesis prints it in a falsifying example."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes | None = None

    def __repr__(self) -> str:
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.params)
        text = f"{self.method} {self.path}{'?' + query if query else ''}"
        for name, value in self.headers:
            text += f"\n  {name}: {value!r}"
        if self.body is not None:
            body = (
                self.body if len(self.body) <= 2000 else self.body[:2000] + b"...(%d bytes)" % len(self.body)
            )
            text += f"\n  body: {body!r}"
        return text


@dataclass
class World:
    """What the strategies need to know about the running daemon."""

    tmp_path: Path
    max_body_bytes: int
    max_input_bytes: int
    #: the document's component schemas
    components: dict[str, Any] = field(default_factory=dict)
    cat: str = ""
    exited: str = ""
    victims: list[str] = field(default_factory=list)


def rarely(draw: st.DrawFn) -> bool:
    """True one time in ten. (Hypothesis starts from, and often comes back to, the simplest
    choices, so a rare case must not be the simplest: that is 0, the first, False.)"""
    return draw(st.integers(0, 9)) == 9


def serialize(value: Any) -> str | None:
    """A query value as text (None: leave the parameter out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return str(value)


def query_values(parameter: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[str | None]:
    """Left out half the time (else a wrong ``computer`` would answer most requests with 404)."""
    valid = from_schema(parameter.get("schema", {}), components).map(serialize)
    # (a lone surrogate cannot be put into a URL: httpx refuses to encode it)
    return st.none() | (valid | valid | st.sampled_from(TRICKY) | st.text(max_size=12)).filter(
        lambda v: v is None or not re.search("[\ud800-\udfff]", v)
    )


def mutated(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Schema-valid objects with one thing wrong (or maybe not: a value may happen to fit)."""

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        value = draw(valid)
        if not isinstance(value, dict):
            return value
        value = dict(value)
        how = draw(st.sampled_from(["drop", "add", "replace"]))
        if how == "add" or not value:
            value[draw(st.sampled_from(["extra", "", "TEXT", "command ", "__proto__"]))] = draw(JSON_VALUES)
        elif how == "drop":
            del value[draw(st.sampled_from(sorted(value)))]
        else:
            value[draw(st.sampled_from(sorted(value)))] = draw(JSON_VALUES)
        return value

    return mutate()


def make_create_safe(body: Any, draw: st.DrawFn, world: World) -> Any:
    """Only harmless programs, only under tmp_path, only our own environment variable names:
    every field the API could act on is rewritten when the API would accept it, and left
    alone (to be refused) when it would not."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    command = body.get("command")
    if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
        body["command"] = draw(
            st.one_of(
                st.sampled_from(SAFE_COMMANDS),
                st.lists(st.text(max_size=8) | st.sampled_from(TRICKY), max_size=3).map(
                    lambda a: ["true", *a]
                ),
                st.sampled_from([[""], ["true", "a\0b"], ["\0"]]),
            )
        )
    if isinstance(body.get("shell"), str) and body["shell"]:
        body["shell"] = draw(st.sampled_from(SAFE_SHELLS))
    if body.get("command") is None and body.get("shell") is None:
        # neither would start the user's login shell
        body["command"] = draw(st.sampled_from(SAFE_COMMANDS))
    cwd = body.get("cwd")
    if cwd is None or (isinstance(cwd, str) and cwd.startswith("/")):
        good = [str(world.tmp_path), str(world.tmp_path / "work")]
        bad = [
            str(world.tmp_path / "missing"),
            str(world.tmp_path / "file"),
            f"{world.tmp_path}/a\0b",
            "rel/dir",
        ]
        body["cwd"] = draw(st.sampled_from(good) | st.sampled_from(bad))
    env = body.get("env")
    if isinstance(env, dict):
        body["env"] = {
            (f"TBFUZZ_{k}" if isinstance(k, str) and is_env_name(k) else k): v for k, v in env.items()
        }
    return body


def body_strategy(
    op: Operation, world: World
) -> st.SearchStrategy[tuple[tuple[tuple[str, bytes], ...], bytes]]:
    assert op.body_schema is not None
    valid = from_schema(op.body_schema, world.components)
    creates = op.method == "POST" and op.path == "/v1/sessions"

    @st.composite
    def build(draw: st.DrawFn) -> tuple[tuple[tuple[str, bytes], ...], bytes]:
        json_type = (("Content-Type", b"application/json"),)
        kind = draw(st.sampled_from(["valid", "valid", "valid", "mutated", "mutated", "any", "raw"]))
        if kind == "raw":
            return draw(
                st.one_of(
                    st.binary(max_size=40).map(lambda b: (json_type, b)),
                    st.just((json_type, b"")),
                    st.just((json_type, b'{"text": "\\ud800"}')),
                    st.just((json_type, b'{"a": NaN}')),
                    valid.map(lambda v: ((("Content-Type", b"text/plain"),), json.dumps(v).encode())),
                    valid.map(lambda v: ((), json.dumps(v).encode())),
                    st.just((json_type, b'{"x": "' + b"a" * world.max_body_bytes + b'"}')),
                )
            )
        if kind == "valid":
            value = draw(valid)
        elif kind == "mutated":
            value = draw(mutated(valid))
        else:
            value = draw(JSON_VALUES)
        if creates:
            value = make_create_safe(value, draw, world)
        return json_type, json.dumps(value).encode()

    return build()


def session_ids(op: Operation, world: World) -> st.SearchStrategy[str]:
    real = [*world.victims, world.exited] if op.method == "DELETE" else [world.cat, world.exited]
    return st.one_of(
        st.sampled_from(real),
        st.sampled_from(real),
        st.sampled_from(["", "x", "..", "a/b", "\0", "%", "0" * 300, *TRICKY[:6]]),
        st.text(max_size=16),
    )


def call_strategy(op: Operation, world: World) -> st.SearchStrategy[Call]:
    @st.composite
    def build(draw: st.DrawFn) -> Call:
        path = op.path
        for parameter in op.params("path"):
            name = parameter["name"]
            value = draw(session_ids(op, world) if name == "session_id" else st.text(max_size=12))
            path = path.replace("{" + name + "}", quote(value, safe=""))
        params = []
        for parameter in op.params("query"):
            value = draw(query_values(parameter, world.components))
            if value is None and op.path.endswith("/wait") and parameter["name"] == "timeout":
                value = "0"  # not the default 30 s
            if value is None:
                continue
            if op.path.endswith("/wait") and parameter["name"] == "timeout":
                # a long poll on a running session would answer only after the timeout
                try:
                    seconds = float(value)
                except ValueError:
                    pass
                else:
                    if math.isfinite(seconds) and seconds > 0.2:
                        value = "0.2"
            params.append((parameter["name"], value))
        if params and rarely(draw):
            params.append(params[0])  # the same parameter twice
        if rarely(draw):
            params.append(("unknown", draw(st.text(max_size=5))))
        headers: tuple[tuple[str, bytes], ...] = ()
        body = None
        if op.body_schema is not None:
            headers, body = draw(body_strategy(op, world))
        elif rarely(draw):
            headers, body = (("Content-Type", b"application/json"),), b'{"unexpected": true}'
        if op.streaming and draw(st.booleans()):
            headers = (*headers, ("Last-Event-ID", draw(HEADER_VALUES)))
        return Call(op.method, path, tuple(params), headers, body)

    return build()


# -- checks ------------------------------------------------------------------------------------


def describe(call: Call, response: httpx.Response, text: str) -> str:
    return f"{call!r}\n  -> {response.status_code} {response.headers.get('content-type')!r}: {text[:600]!r}"


def snapshot(client: httpx.Client) -> dict[str, str]:
    """Every session's state, by id."""
    response = client.get("/v1/sessions")
    assert response.status_code == 200, response.text
    return {s["id"]: s["state"] for s in response.json()["sessions"]}


def state_changes(before: dict[str, str], after: dict[str, str], stable: set[str]) -> str | None:
    """What changed between two snapshots, leaving out sessions that ended by themselves
    (a fuzzed ``true`` may end at any time; ``stable`` sessions and ended ones never do)."""
    gone, new = set(before) - set(after), set(after) - set(before)
    changed = {
        k: (v, after[k])
        for k, v in before.items()
        if k in after and after[k] != v and (k in stable or v in STABLE_STATES)
    }
    return f"sessions gone {gone}, new {new}, changed {changed}" if gone or new or changed else None


def error_problem(response: httpx.Response, text: str) -> str | None:
    """What is wrong with an error response (None: nothing)."""
    if "traceback" in text.lower() or 'File "' in text:
        return "traceback text in an error response"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return "an error response that is not JSON"
    try:
        body = json.loads(text)
    except ValueError:
        return "an error response that is not valid JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or set(body) != {"error"}
        or not isinstance(error, dict)
        or set(error) != {"code", "message"}
        or not isinstance(error["code"], str)
        or not error["code"]
        or not isinstance(error["message"], str)
    ):
        return 'an error body not of the shape {"error": {"code": str, "message": str}}'
    return None


@dataclass
class Fuzzer:
    client: httpx.Client
    document: dict[str, Any]
    world: World
    #: what went wrong, with the request: one line per problem and request
    failures: list[str] = field(default_factory=list)
    #: during a Hypothesis run: problem -> the last failing request (after shrinking, the
    #: minimal one, replayed last)
    current: dict[str, str] | None = None
    statuses: dict[str, Counter[int]] = field(default_factory=dict)

    @property
    def stable(self) -> set[str]:
        return {self.world.cat, self.world.exited, *self.world.victims}

    def send(self, call: Call) -> tuple[httpx.Response, str]:
        request = self.client.build_request(
            call.method, call.path, params=list(call.params), headers=list(call.headers), content=call.body
        )
        response = self.client.send(request, stream=True)
        try:
            if response.status_code < 300 and "text/event-stream" in response.headers.get("content-type", ""):
                return response, ""  # a live stream: status and headers only
            response.read()
            return response, response.content.decode("utf-8", "replace")
        finally:
            response.close()

    def check(self, op: Operation, call: Call) -> None:
        before = snapshot(self.client)
        try:
            response, text = self.send(call)
        except httpx.TimeoutException:
            self.fail(op, "no answer in time", f"{call!r}\n  -> no response in {REQUEST_TIMEOUT} s")
        except httpx.TransportError as exc:
            self.fail(op, "connection failed", f"{call!r}\n  -> {exc!r}")
        status = response.status_code
        self.statuses.setdefault(op.name, Counter())[status] += 1
        if status >= 500:
            self.fail(op, f"{status}", describe(call, response, text))
        if 300 <= status < 400 and "location" not in response.headers:
            self.fail(op, "redirect without Location", describe(call, response, text))
        if status >= 400:
            problem = error_problem(response, text)
            if problem is not None:
                self.fail(op, problem, describe(call, response, text))
            changes = state_changes(before, snapshot(self.client), self.stable)
            if changes is not None:
                self.fail(
                    op, "a refused request changed state", describe(call, response, text) + "\n  " + changes
                )
        elif status < 300:
            documented = op.responses.get(str(status))
            if documented is None:
                self.fail(op, f"undocumented status {status}", describe(call, response, text))
            schema = documented.get("content", {}).get("application/json", {}).get("schema")
            if schema is not None:
                try:
                    reason = conforms(json.loads(text), schema, self.world.components)
                except ValueError:
                    reason = "not JSON"
                if reason is not None:
                    self.fail(
                        op,
                        "a response body not as documented",
                        describe(call, response, text) + f"\n  {reason}",
                    )

    def fail(self, op: Operation, problem: str, detail: str) -> NoReturn:
        if self.current is not None:
            self.current[problem] = detail
        else:
            self.failures.append(f"{op.name}: {problem}\n{detail}")
        raise AssertionError(f"{op.name}: {problem}\n{detail}")

    def fuzz(self, op: Operation) -> None:
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(call=call_strategy(op, self.world))
        def run(call: Call) -> None:
            self.check(op, call)

        self.current = {}
        try:
            run()
        except Exception:
            if not self.current:
                raise  # not a failure of the API's: of this test
            # go on with the other operations
        finally:
            self.failures.extend(
                f"{op.name}: {problem}\n{detail}" for problem, detail in self.current.items()
            )
            self.current = None

    def wrong_methods(self) -> None:
        """Every documented path with each method it does not have: a JSON 405, never a 5xx."""
        documented: dict[str, set[str]] = {}
        for op in operations(self.document):
            documented.setdefault(op.path, set()).add(op.method)
        for path, methods in documented.items():
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
                op = Operation(method, path, (), None, {})
                call = Call(method, path.replace("{session_id}", self.world.cat))
                try:
                    self.check(op, call)
                except AssertionError:
                    pass  # recorded

    def edge_cases(self) -> None:
        """Requests the random draw above may miss, each sent on the real sessions: the classic
        broken bodies to every operation that takes a JSON body, and odd ``Last-Event-ID``
        headers to every stream."""
        safe = json.dumps({"command": ["true"], "cwd": str(self.world.tmp_path), "text": "", "keys": ["x"]})
        json_type = ("Content-Type", b"application/json")
        bodies = [
            ((json_type,), b"\x80"),  # not UTF-8
            ((json_type,), b'{"text": "\xff"}'),
            ((json_type,), b"\xef\xbb\xbf{}"),  # a byte order mark
            ((json_type,), b""),
            ((json_type,), b"{"),
            ((json_type,), b"[]"),
            ((json_type,), b"null"),
            ((json_type,), b'"text"'),
            ((json_type,), b'{"text": NaN, "keys": Infinity}'),
            ((json_type,), b'{"text": "\\ud800", "keys": ["\\udc80"]}'),  # lone surrogates
            ((json_type,), b'{"text": "' + b"a" * self.world.max_body_bytes + b'"}'),
            ((json_type,), b'{"text": "' + b"a" * (self.world.max_input_bytes + 1) + b'"}'),
            ((("Content-Type", b"application/json; charset=latin-1"),), b'{"text": "\xe9"}'),
            ((("Content-Type", b"text/plain"),), safe.encode()),
            ((("Content-Type", b"application/x-www-form-urlencoded"),), b"text=a&keys=b"),
            ((), safe.encode()),
        ]
        # (latin-1 on the wire: b"\xb2" is "²", a digit to str.isdigit but not to int)
        last_ids = [b"\xb2", b"\xb9", b"\xd9\xa3", b"-1", b"+1", b"1" * 30, b"0x10", b""]
        for op in operations(self.document):
            cases: list[tuple[tuple[tuple[str, bytes], ...], bytes | None]] = []
            if op.body_schema is not None:
                cases += bodies
            if op.streaming:
                cases += [((("Last-Event-ID", value),), None) for value in last_ids]
            for session_id in (self.world.cat, self.world.exited):
                for headers, body in cases:
                    call = Call(op.method, op.path.replace("{session_id}", session_id), (), headers, body)
                    try:
                        self.check(op, call)
                    except AssertionError:
                        pass  # recorded
                if "{session_id}" not in op.path:
                    break


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def fuzz_everything(api_url: str, token: str, world: World, log: Callable[[str], None]) -> Fuzzer:
    (world.tmp_path / "work").mkdir()
    (world.tmp_path / "file").write_text("not a directory\n")
    # One connection per request: a request whose body the server does not read (a GET with a
    # body) now and then leaves a keep-alive connection on which the next request gets no
    # answer (hypercorn 0.18); kept apart, every request is judged on its own.
    limits = httpx.Limits(max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=REQUEST_TIMEOUT, limits=limits) as client:
        document = request(client, "GET", "/v1/openapi.json")
        world.components = document.get("components", {}).get("schemas", {})
        fuzzer = Fuzzer(client, document, world)
        cwd = str(world.tmp_path)
        try:
            # raw mode: a fuzzed ^C, ^D or ^Z is a byte for cat, not a signal or an end of file
            world.cat = request(
                client,
                "POST",
                "/v1/sessions",
                json={"command": ["sh", "-c", "stty raw; exec cat"], "cwd": cwd},
            )["id"]
            world.exited = request(client, "POST", "/v1/sessions", json={"command": ["true"], "cwd": cwd})[
                "id"
            ]
            assert request(client, "GET", f"/v1/sessions/{world.exited}/wait", params={"timeout": 9})["ended"]
            for _ in range(3):
                victim = request(
                    client, "POST", "/v1/sessions", json={"command": ["sleep", "300"], "cwd": cwd}
                )
                world.victims.append(victim["id"])
            for op in operations(document):
                started = time.monotonic()
                fuzzer.fuzz(op)
                statuses = dict(sorted(fuzzer.statuses[op.name].items()))
                log(f"{op.name}: {time.monotonic() - started:.1f} s, statuses {statuses}")
            fuzzer.wrong_methods()
            fuzzer.edge_cases()
            cat = request(client, "GET", f"/v1/sessions/{world.cat}")
            assert cat["state"] == "running", "the cat session did not live through the fuzz"
        finally:
            kill_all(client)
    return fuzzer


def kill_all(client: httpx.Client) -> None:
    for session in request(client, "GET", "/v1/sessions")["sessions"]:
        if session["state"] in ("starting", "running"):
            response = client.delete(f"/v1/sessions/{session['id']}")
            assert response.status_code in (200, 409), response.text
    running = request(client, "GET", "/v1/sessions", params={"state": "starting,running"})["sessions"]
    assert running == [], f"sessions still running after the fuzz: {running}"


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_fuzz_every_operation(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    # a bound against a hang, not a speed test: 40 s of the fuzz's fixed work beside two busy
    # loops, over 55 s in a parallel run on a loaded machine
    with trio.fail_after(130):
        async with running_daemon(sandbox, bind="127.0.0.1:0") as daemon:
            assert daemon.running.api_url is not None
            world = World(tmp_path, daemon.settings.max_body_bytes, daemon.settings.max_input_bytes)
            fuzzer = await trio.to_thread.run_sync(
                fuzz_everything,
                daemon.running.api_url,
                daemon.tcp_token,
                world,
                lines.append,
                abandon_on_cancel=True,
            )
    print("\n".join(lines))  # statuses per operation (pytest -s shows them)
    creates = fuzzer.statuses["POST /v1/sessions"]
    assert creates[201] and sum(n for s, n in creates.items() if 400 <= s < 500), (
        f"the fuzz should both create sessions and be refused: {creates}"
    )
    for name, statuses in fuzzer.statuses.items():
        if "{session_id}" in name and "PATCH" not in name and "PUT" not in name:
            assert set(statuses) - {404}, f"{name} never reached a real session: {statuses}"
    assert not fuzzer.failures, "\n\n".join(fuzzer.failures)


async def test_openapi_refs_resolve(sandbox: Sandbox) -> None:
    """Every ``$ref`` in the document names a schema it has (clients generate code from it)."""
    async with running_daemon(sandbox) as daemon, daemon.client() as client:
        response = await client.get("/v1/openapi.json")
        assert response.status_code == 200
        assert dangling_refs(response.json()) == []
