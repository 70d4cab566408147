"""Pure helpers: control-mode decoding, quoting, text and key validation, plain-text filter."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_bridge._terminal import PlainText
from trio_bridge.tmux import KEY_NAMES, InvalidKeyError, InvalidTextError
from trio_bridge.tmux._keys import check_keys
from trio_bridge.tmux._protocol import check_session_name, check_text, decode_output, quote_argument


def tmux_escape(data: bytes) -> bytes:
    """What tmux does to %output data: bytes below 32 and backslash become \\ooo."""
    return b"".join(b"\\%03o" % byte if byte < 32 or byte == 0x5C else bytes([byte]) for byte in data)


@given(st.binary(max_size=2000))
def test_decode_output_inverts_tmux_escaping(data: bytes) -> None:
    assert decode_output(tmux_escape(data)) == data


def test_decode_output_known_line() -> None:
    assert decode_output(rb"\033[31mRED\033[0m\015\012") == b"\x1b[31mRED\x1b[0m\r\n"
    assert decode_output(rb"a\134b") == b"a\\b"


@given(st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=200))
def test_quote_argument_is_single_quoted_and_round_trips(arg: str) -> None:
    quoted = quote_argument(arg)
    assert quoted.startswith("'") and quoted.endswith("'")
    # Reading it back with tmux's rule (literal inside '', \' outside) gives the argument.
    assert re.sub(r"'\\''", "'", quoted[1:-1]) == arg


def test_quote_argument_refuses_newlines() -> None:
    with pytest.raises(ValueError, match="newline"):
        quote_argument("a\nb")


@pytest.mark.parametrize(
    "text",
    ["; kill-server", "\\", "-t other", "#{pane_id} $(touch x) `id` ~", "tab\there", "é 日本 🎉", "a\nb"],
)
def test_check_text_accepts_hostile_but_printable_text(text: str) -> None:
    assert check_text(text) == text.encode()


def test_check_text_normalises_crlf() -> None:
    assert check_text("a\r\nb") == b"a\nb"


@pytest.mark.parametrize("char", ["\x1b", "\x00", "\x03", "\x7f", "\x9b", "\r"])
def test_check_text_rejects_control_characters(char: str) -> None:
    with pytest.raises(InvalidTextError, match=f"U\\+{ord(char):04X} at index 1"):
        check_text("a" + char)


def test_check_text_rejects_lone_surrogates() -> None:
    with pytest.raises(InvalidTextError, match="not valid Unicode"):
        check_text("ok \udcff")


def test_check_text_rejects_non_strings() -> None:
    with pytest.raises(InvalidTextError):
        check_text(b"bytes")  # type: ignore[arg-type]


def test_keys_vocabulary() -> None:
    assert check_keys(["Enter", "C-c", "Up", "F12"]) == ("Enter", "C-c", "Up", "F12")
    assert {"Enter", "Escape", "Tab", "Up", "Down", "Left", "Right", "PgUp", "NPage", "KP5"} <= KEY_NAMES
    assert check_keys(["q", "M-x", "C-Left", "S-Up", "C-M-a", ";", "M-;"]) == (
        "q", "M-x", "C-Left", "S-Up", "C-M-a", "\\;", "M-\\;",
    )  # fmt: skip
    for bad in [
        "enter",
        "-t",
        "C-c;",
        "kill-server",
        "",
        "c-c",
        "Enter Enter",
        "\x03",
        "a\n",
        "C-",
        "C-C-C-C-a",
    ]:
        with pytest.raises(InvalidKeyError):
            check_keys([bad])


@pytest.mark.parametrize("name", ["tb-x", "tb-0123abcd"])
def test_session_names_ok(name: str) -> None:
    assert check_session_name(name) == name


@pytest.mark.parametrize("name", ["", "=tb", "a:b", "a.b", "a b", "x" * 65, "tb;x"])
def test_session_names_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tmux session name"):
        check_session_name(name)


# -- the plain-text filter ------------------------------------------------------

TERMINAL_STREAM = (
    b"\x1b[?2004hplain \x1b[1;31mred\x1b[0m\r\n"
    b"\x1b]0;a title\x07title gone\r\n"
    b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\r\n"
    b"\x1bPq#0;2\x1b\\dcs gone\x1b(B\x1b=\r\n"
    b"progress 10%\rprogress 20%\r\n"
    b"tab\tand unicode \xc3\xa9\r\n"
)
PLAIN = b"plain red\ntitle gone\nlink\ndcs gone\nprogress 10%\rprogress 20%\ntab\tand unicode \xc3\xa9\n"


def test_plain_text_strips_sequences_and_crlf() -> None:
    f = PlainText()
    assert f.feed(TERMINAL_STREAM) + f.flush() == PLAIN


@given(st.lists(st.integers(min_value=0, max_value=len(TERMINAL_STREAM)), max_size=12))
def test_plain_text_is_independent_of_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [
        TERMINAL_STREAM[a:b] for a, b in zip([0, *points], [*points, len(TERMINAL_STREAM)], strict=True)
    ]
    f = PlainText()
    assert b"".join(f.feed(c) for c in chunks) + f.flush() == PLAIN


@given(st.binary(max_size=500).filter(lambda b: not any(c in b for c in b"\x1b\r\x0e\x0f")))
def test_plain_text_leaves_plain_bytes_alone(data: bytes) -> None:
    f = PlainText()
    assert f.feed(data) + f.flush() == data


def test_plain_text_drops_charset_switches() -> None:
    f = PlainText()
    assert f.feed(b"\x1b(0\x0eqqq\x0f\x1b(B ok\r\n") + f.flush() == b"qqq ok\n"


def test_plain_text_keeps_a_final_lone_cr() -> None:
    f = PlainText()
    assert f.feed(b"50%\r") + f.flush() == b"50%\r"
