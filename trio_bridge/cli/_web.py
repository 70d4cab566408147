"""``trio-bridge web``: a single-use login link to the daemon's web dashboard.

The daemon makes the link (it knows its listener and keeps the code); this asks for it over
the owner's door (the unix socket, or ``url`` with the token) and prints it as the last line of
stdout, so that scripts can take it with ``tail -n 1``. ``--open`` hands it to the user's browser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from ..client import ApiError, Client, DaemonUnavailableError
from ..config import ConfigError
from ._client import EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, load_client_settings
from ._text import printable

__all__ = ["web"]


def web(args: argparse.Namespace, flags: Mapping[str, object]) -> int:
    """Print (and with ``--open`` open) a login link; the exit codes of the client commands."""
    try:
        settings = load_client_settings(flags, getattr(args, "config", None))
    except ConfigError as exc:
        print(f"trio-bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Client(settings.api_socket, settings.url, settings.client_token()) as client:
            link = client.request("POST", "/web/login").json()
    except DaemonUnavailableError as exc:
        print(f"trio-bridge: {printable(str(exc))}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ApiError as exc:
        print(f"trio-bridge: {printable(exc.message)}", file=sys.stderr)
        return EXIT_REFUSED
    url = str(link["url"])
    seconds = float(link.get("expires_in", 60))
    print(f"Open this link within {seconds:g} seconds; it works once:", flush=True)
    print(url, flush=True)
    if args.open:
        import webbrowser

        if not webbrowser.open(url):
            print("trio-bridge: no browser could be started; open the link yourself", file=sys.stderr)
    return 0
