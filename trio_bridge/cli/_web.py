"""``trio-bridge web``: a single-use login link to the daemon's web dashboard.

The daemon makes the link (it knows its listener and keeps the code); this asks for it over
the owner's door (the unix socket, or ``url`` with the token) and prints it as the last line of
stdout, so that scripts can take it with ``tail -n 1``. ``--open`` hands it to the user's browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._text import error

if TYPE_CHECKING:
    from ._context import Invocation

__all__ = ["web"]


def web(invocation: Invocation) -> int:
    """Print (and with ``--open`` open) a login link; the exit codes of the client commands."""
    with invocation.open_client() as client:
        link = client.request("POST", "/web/login").json()
    url = str(link["url"])
    seconds = float(link.get("expires_in", 60))
    print(f"Open this link within {seconds:g} seconds; it works once:", flush=True)
    print(url, flush=True)
    if invocation.args.open:
        import webbrowser

        if not webbrowser.open(url):
            error("no browser could be started; open the link yourself")
    return 0
