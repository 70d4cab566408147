"""The dashboard's cookie sessions in the API's admission rules (``api/_access.py``), without a
browser: which requests a cookie admits, and which it never does."""

from __future__ import annotations

import pytest

from trio_bridge.api._access import WEB_SESSION_SECONDS, Access, AccessDenied

TOKEN = "t" * 43
SERVER = ("127.0.0.1", 8080)
OWN = "http://127.0.0.1:8080"


def access(*, web: bool = True, token: str = TOKEN) -> Access:
    return Access(tcp_token=token, web=web)


def headers(cookie: str | None = None, **more: str) -> dict[str, str]:
    base = {"Host": "127.0.0.1:8080"}
    if cookie is not None:
        base["Cookie"] = f"tb_web_8080={cookie}"
    return {**base, **{k.replace("_", "-"): v for k, v in more.items()}}


def status(rules: Access, given: dict[str, str], path: str = "/v1/sessions", method: str = "GET") -> object:
    try:
        return rules.check(SERVER, given, path, method)
    except AccessDenied as exc:
        return exc.status


def test_a_cookie_admits_only_the_dashboards_own_requests() -> None:
    rules = access()
    cookie = rules.web_session(8080)
    # the page's fetches: its Origin on a change, Sec-Fetch-Site on a read; its WebSocket
    assert status(rules, headers(cookie, Origin=OWN), method="POST") == "cookie"
    assert status(rules, headers(cookie, Origin="http://localhost:8080"), method="DELETE") == "cookie"
    assert status(rules, headers(cookie, Sec_Fetch_Site="same-origin")) == "cookie"
    assert status(rules, headers(cookie, Origin=OWN), "/v1/sessions/x/ws") == "cookie"
    # anything else carrying it: a form or curl (no Origin), another port's page, a foreign site
    assert status(rules, headers(cookie), method="POST") == 403
    assert status(rules, headers(cookie)) == 403
    assert status(rules, headers(cookie, Sec_Fetch_Site="same-site")) == 403
    assert status(rules, headers(cookie, Sec_Fetch_Site="same-origin"), method="POST") == 403
    assert status(rules, headers(cookie, Origin="http://127.0.0.1:9999"), method="POST") == 403
    assert status(rules, headers(cookie, Origin="http://evil.example"), method="POST") == 403
    assert status(rules, headers(cookie, Origin="null"), method="POST") == 403
    # and never for an agent's hook (the token's door)
    assert status(rules, headers(cookie, Origin=OWN), "/v1/sessions/x/hooks", "POST") == 401


def test_a_cookie_is_bound_to_its_token_port_and_lifetime() -> None:
    rules = access()
    other_port = rules.web_session(9090)
    assert status(rules, headers(other_port, Origin=OWN), method="POST") == 401
    other_token = access(token="u" * 43).web_session(8080)
    assert status(rules, headers(other_token, Origin=OWN), method="POST") == 401
    expired = rules.web_session(8080, now=1000.0)
    assert status(rules, headers(expired, Origin=OWN), method="POST") == 401
    assert not rules._web_session_valid(8080, rules.web_session(8080, now=0), now=WEB_SESSION_SECONDS)
    fresh = rules.web_session(8080)
    expiry, nonce, mac = fresh.split(".")
    for forged in (
        f"{int(expiry) + 1}.{nonce}.{mac}",
        f"{expiry}.{nonce}x.{mac}",
        f"{expiry}.{nonce}",
        "",
        "a.b.c",
    ):
        assert status(rules, headers(forged, Origin=OWN), method="POST") == 401, forged
    # two cookies of that name: one may have been planted by another port's page
    doubled = headers(Origin=OWN)
    doubled["Cookie"] = f"tb_web_8080={fresh}; tb_web_8080={fresh}"
    assert status(rules, doubled, method="POST") == 401


def test_without_the_dashboard_cookies_and_pages_are_nothing() -> None:
    cookie = access().web_session(8080)
    rules = access(web=False)
    assert status(rules, headers(cookie, Origin=OWN), method="POST") == 401
    assert status(rules, headers(), "/") == 401
    assert status(rules, headers(), "/login") == 401
    # with it, the page and the login door are public; the API is not
    rules = access()
    assert status(rules, headers(), "/") == "public"
    assert status(rules, headers(), "/web/vendor/xterm.mjs") == "public"
    assert status(rules, headers(), "/login") == "public"
    assert status(rules, headers(), "/v1/sessions") == 401
    assert status(rules, headers(), "/login", "POST") == 401
    assert status(rules, headers(), "/web/../v1/sessions") == 401
    # a foreign Host or Origin is refused on the public pages too
    assert status(rules, {"Host": "evil.example:8080"}, "/") == 421
    assert status(rules, headers(Origin="http://evil.example"), "/") == 403


def test_the_bearer_token_still_rules_the_api() -> None:
    rules = access()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert status(rules, headers(**bearer), method="POST") == "token"
    # a bad token is not rescued by a good cookie
    wrong = {"Authorization": "Bearer " + "x" * 43}
    assert status(rules, headers(rules.web_session(8080), Origin=OWN, **wrong), method="POST") == 401
    assert rules.check(None, {}, "/v1/sessions") == "socket"


@pytest.mark.parametrize("port", [None, 0])
def test_a_cookie_needs_a_token_to_sign_with(port: int | None) -> None:
    with pytest.raises(ValueError, match="token"):
        Access(web=True).web_session(port)
