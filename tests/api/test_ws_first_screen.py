"""A WebSocket's first screen and the output streamed after it show each byte once: what the
program prints while the screen is taken (here: its answer to the attach's resize) is either in
the screen or in the stream, never in both (drawn twice, the cursor ends a line too low)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from .._api import create, daemon_and_client, open_ws, output_until, ws_url
from ..conftest import Sandbox

#: prints WINCH <rows>x<cols> at once on every SIGWINCH (a shell's trap waits for its sleep)
PROGRAM = """
import os, signal, sys
def told(*_):
    rows, cols = os.get_terminal_size().lines, os.get_terminal_size().columns
    sys.stdout.write(f"WINCH {rows}x{cols}\\n"); sys.stdout.flush()
signal.signal(signal.SIGWINCH, told)
sys.stdout.write("ready\\n"); sys.stdout.flush()
while True:
    signal.pause()
"""


async def test_output_during_the_first_screen_is_not_streamed_again(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with daemon_and_client(sandbox, bind="127.0.0.1:0") as (daemon, client):
            sid = (await create(client, tmp_path, command=[sys.executable, "-c", PROGRAM]))["id"]
            await output_until(client, sid, b"ready\r\n")
            for n, (width, height) in enumerate([(100, 30), (90, 20), (120, 40), (70, 25), (110, 35)]):
                query = f"screen=1&offset=end&width={width}&height={height}"
                url = ws_url(daemon, f"/v1/sessions/{sid}/ws?{query}")
                told = f"WINCH {height}x{width}"
                async with open_ws(daemon, url) as ws:
                    hello = json.loads(await ws.get_message())
                    assert hello["type"] == "hello", hello
                    screen = json.loads(await ws.get_message())
                    assert screen["type"] == "screen", screen
                    streamed = b""
                    # the answer is in the screen, or it comes in the stream: wait for it there,
                    # then a little longer for a copy
                    with trio.move_on_after(10 if told not in screen["text"] else 0.5):
                        while told.encode() not in streamed or told in screen["text"]:
                            message = await ws.get_message()
                            assert isinstance(message, bytes), message
                            streamed += message
                    shown = screen["text"].count(told) + streamed.decode().count(told)
                    assert shown == 1, (n, told, screen["text"], streamed)
