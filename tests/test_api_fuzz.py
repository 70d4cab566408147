"""A schema-driven fuzz of the API from its own OpenAPI document: never a 5xx, never a traceback.

Request bodies and query strings are drawn from the schemas in ``/v1/openapi.json`` (so the
document is what drives the fuzz), plus arbitrary JSON that does not match them; requests go over
real HTTP to a daemon running as a process, with a fixed, derandomised set of examples so CI is
repeatable. ``from_schema`` below covers the JSON-schema subset msgspec emits: hypothesis-jsonschema
0.23.1 fails with this hypothesis (6.170: ``'many' object has no attribute 'more'``), and
schemathesis would bring a large dependency tree for the same job.

Safety: drawn ``command``/``shell`` fields are replaced by harmless commands (everything else in
the body stays as drawn), and session ids are either the ids of known sessions or random ones.
Long-lived routes (``/stream``, ``/events``, ``/ws``) and ``/wait`` with long limits are left out:
they hold a connection by design.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Sandbox
from .test_daemon import stop

HARMLESS = [["true"], ["sleep", "30"], ["cat"]]


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    env = {**sandbox.env, "TRIO_BRIDGE_BIND": "127.0.0.1:0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "daemon"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    url = None
    for _ in range(50):
        line = proc.stderr.readline().decode()
        if "API listening on" in line:
            url = next(part.strip(",") for part in line.split() if part.startswith("http://127.0.0.1"))
        if "ready" in line or not line:
            break
    assert url is not None
    try:
        with httpx.Client(base_url=url, timeout=20) as client:
            yield client
            for record in client.get("/v1/sessions", params={"state": "running,starting"}).json()["sessions"]:
                client.delete(f"/v1/sessions/{record['id']}")
    finally:
        assert stop(proc) == 0


def from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for ``schema`` (``$ref``s resolved in ``components``)."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components))
    if "anyOf" in schema:
        return st.one_of([from_schema(option, components) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40))
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(from_schema(schema.get("items", {}), components), min_size=low, max_size=max(low, 4))
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        values = schema.get("additionalProperties")
        extra = (
            st.dictionaries(st.text(max_size=8), from_schema(values, components), max_size=3)
            if isinstance(values, dict)
            else st.just({})
        )
        return st.fixed_dictionaries(
            {k: from_schema(v, components) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, components) for k, v in properties.items() if k not in required},
        ).flatmap(lambda fixed: extra.map(lambda more: {**more, **fixed}))
    return st.none() | st.booleans() | st.integers() | st.text(max_size=10)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)


def test_fuzz_from_the_openapi_document(api: httpx.Client, tmp_path: Any) -> None:
    document = api.get("/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    known = [
        api.post("/v1/sessions", json={"command": ["cat"], "cwd": str(tmp_path)}).json()["id"],
        api.post("/v1/sessions", json={"command": ["true"], "cwd": str(tmp_path)}).json()["id"],
    ]
    api.get(f"/v1/sessions/{known[1]}/wait", params={"timeout": 10})
    operations = []
    for path, methods in document["paths"].items():
        if path.endswith(("/stream", "/events")) or path == "/v1/openapi.json":
            continue
        for method, operation in methods.items():
            operations.append((path, method.upper(), operation))
    session_ids = st.sampled_from(known) | st.text(
        st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=16
    )
    any_json = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )

    @st.composite
    def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, Any] | None, Any]:
        path, method, operation = draw(st.sampled_from(operations))
        if "{session_id}" in path:
            path = path.replace("{session_id}", draw(session_ids))
        params: dict[str, Any] | None = None
        query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        if query:
            params = {}
            for parameter in query:
                if draw(st.booleans()):
                    value = draw(from_schema(parameter["schema"], schemas))
                    if value is not None:
                        params[parameter["name"]] = (
                            json.dumps(value) if isinstance(value, list | dict) else value
                        )
            if path.endswith("/wait"):
                params["timeout"] = draw(st.sampled_from([0, 0.05, -1, "x"]))
        body: Any = None
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if content is not None:
            valid = draw(st.booleans())
            body = draw(from_schema(content["schema"], schemas) if valid else any_json)
            if isinstance(body, dict) and path == "/v1/sessions":
                if "command" in body or "shell" in body or draw(st.booleans()):
                    body["command"] = draw(st.sampled_from(HARMLESS))
                    body.pop("shell", None)
                body["cwd"] = str(tmp_path)
        return method, path, params, body

    @settings(
        max_examples=300,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def fuzz(request: tuple[str, str, dict[str, Any] | None, Any]) -> None:
        method, path, params, body = request
        before = api.get("/v1/sessions").json()["sessions"]
        response = api.request(method, path, params=params, json=body)
        seen[(method, path.split("/")[-1] if "sessions/" in path else path, response.status_code)] += 1
        check(response)
        if response.status_code >= 400 and method != "GET":
            after = api.get("/v1/sessions").json()["sessions"]
            # a refused request changes nothing (sessions may end by themselves meanwhile)
            assert [s["id"] for s in after] == [s["id"] for s in before]

    seen: collections.Counter[tuple[str, str, int]] = collections.Counter()
    fuzz()
    print(sorted(seen.items()))
    # every operation was exercised, and both accepted and refused
    assert {(m, p) for m, p, _ in seen} >= {("POST", "/v1/sessions"), ("POST", "input"), ("POST", "keys")}
    assert any(code < 300 for *_, code in seen) and any(code >= 400 for *_, code in seen)
    # and the daemon still works
    assert api.get("/v1/health").json() == {"status": "ok"}
