"""``trio-bridge config``: the effective settings and where each value came from."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..config import SETTINGS, Setting, default_computer_name, setting_value

if TYPE_CHECKING:
    from ._context import Invocation

__all__ = ["show_config"]


def _shown(setting: Setting, value: object) -> str:
    if value is None and setting.name == "computer":
        # what the daemon then calls this computer
        return f"(unset: the host name, {default_computer_name()})"
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):  # telegram_users: as it is written in a variable
        return ",".join(map(str, value)) or "(none)"
    return "(set, hidden)" if setting.secret else str(value)


def show_config(invocation: Invocation) -> int:
    """Print the settings (``--json``: one JSON object) and the agent profiles."""
    resolved = invocation.resolved
    rows = [
        (s.name, _shown(s, setting_value(resolved.settings, s.name)), resolved.sources[s.name])
        for s in SETTINGS
    ]
    profiles = sorted(resolved.settings.agents.items())
    agents = {
        name: {"binary": p.binary, "args": list(p.args), "hooks": p.hooks, "confirm": p.confirm}
        for name, p in profiles
    }
    if invocation.args.json:
        document = {
            "config_file": str(resolved.config_file),
            "settings": {name: {"value": value, "source": source} for name, value, source in rows},
            "agents": agents,
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"# config file: {resolved.config_file}")
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  ({source})")
    print("# agent profiles ([agents.NAME] tables change them)")
    for name, profile in profiles:
        command = " ".join([profile.binary, *profile.args])
        how = f"hooks {profile.hooks}, confirmed by {profile.confirm}"
        print(f"{'agents.' + name:<{width}}  {command}  ({how})")
    return 0
