"""Developer sessions: nox -s tests | lint | typecheck | bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, in parallel as scripts/test runs it (needs tmux and redis-server on PATH;
    scripts/test installs them)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-n", "auto", "--dist", "loadgroup", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".", "mypy")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; results go to bench-results/results.json and results.md."""
    session.install("-e", ".", "playwright")  # the dashboard's, with Debian's chromium
    session.run("python", "-m", "benchmarks", "--out", "bench-results", *session.posargs)
