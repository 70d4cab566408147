"""Short usage errors (clig.dev): the command's usage line, what is wrong, a suggestion for a
misspelled command or flag, and where to read more; exit code 2. argparse's own print the
whole usage block (20 lines of settings flags) and suggest nothing."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterator
from typing import NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are three lines at most (its sub-commands' too)."""

    def error(self, message: str) -> NoReturn:
        lines = [f"usage: {self._short_usage()}", f"{self.prog}: {self._explain(message)}"]
        lines.append(f"try '{self.prog} --help'")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def _short_usage(self) -> str:
        words = [self.prog]
        if any(a.option_strings for a in self._actions if a.help is not argparse.SUPPRESS):
            words.append("[OPTIONS]")
        for action in self._actions:
            if action.option_strings or action.help is argparse.SUPPRESS:
                continue
            name = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            words.append(name if action.nargs not in ("+", "*", "?") else f"{name}...")
        return " ".join(words)

    def _explain(self, message: str) -> str:
        choice = re.match(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(3))
            what = "command" if choice.group(1) == "COMMAND" else f"choice for {choice.group(1)}"
            return f"error: unknown {what} {choice.group(2)!r}{_suggest(choice.group(2), options)}"
        unknown = re.match(r"unrecognized arguments: (.*)$", message)
        if unknown:
            flags = sorted(set(self._all_options()))
            words = unknown.group(1).split()
            first = next((w for w in words if w.startswith("-")), words[0])
            flag = first.split("=", 1)[0]
            hint = _suggest(flag, flags) if flag.startswith("-") else ""
            return (
                f"error: unknown option {first!r}{hint}"
                if flag.startswith("-")
                else f"error: unexpected {first!r}"
            )
        return f"error: {message}"

    def _all_options(self) -> Iterator[str]:
        for action in self._actions:
            yield from (o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    for sub_action in sub._actions:
                        yield from (o for o in sub_action.option_strings if o.startswith("--"))


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
