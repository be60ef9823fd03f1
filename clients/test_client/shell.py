"""The command language of ``python -m test_client``: interactive and scripted sessions.

Every line printed starts with a fixed word so both a person and a script can read it:
``ok <command> <json>``, ``error <command> <CODE or reason>``, ``push <TYPE> <json>`` and
``info <event> <detail>``. Pushes print the moment they arrive, also while waiting for input.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from protocol import MsgType
from test_client.client import GameClient, Push
from test_client.errors import ClientError, RequestError

HELP = """\
commands:
  echo <text | {json object}>   ECHO_REQ ({"text": ...} unless given a JSON object)
  move <x> <y>                  MOVE_REQ
  whisper <user_id> <text>      WHISPER_REQ
  ping                          PING_REQ (prints the round trip in rtt_ms)
  reconnect                     drop the socket and resume the session with the key
  logout                        LOGOUT_REQ, then exit
  quit                          exit without logging out
  help                          this text"""

Printer = Callable[[str], None]


def stdout_line(line: str) -> None:
    print(line, flush=True)


def to_json(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def type_name(msg_type: int) -> str:
    try:
        return MsgType(msg_type).name
    except ValueError:
        return str(msg_type)


def push_line(push: Push) -> str:
    return f"push {type_name(push.msg_type)} {to_json(push.payload)}"


@dataclass
class Outcome:
    ok: bool
    stop: bool = False


class UsageError(ValueError):
    """A command line that does not parse; the text says how to write it."""


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _echo_payload(rest: str) -> dict[str, Any]:
    if rest.lstrip().startswith("{"):
        try:
            obj = orjson.loads(rest)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"bad JSON: {exc}") from None
        if isinstance(obj, dict):
            return obj
    return {"text": rest}


async def execute(client: GameClient, line: str, out: Printer = stdout_line) -> Outcome:
    """Run one command line against a logged-in client and print its result."""
    words = line.strip().split(maxsplit=1)
    if not words:
        return Outcome(ok=True)
    name, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
    try:
        return await _dispatch(client, name, rest, out)
    except UsageError as exc:
        out(f"error {name} usage: {exc}")
    except RequestError as exc:
        out(f"error {name} {exc.code} {exc.message}".rstrip())
    except (ClientError, OSError) as exc:
        out(f"error {name} {type(exc).__name__}: {exc}")
    return Outcome(ok=False)


async def _dispatch(client: GameClient, name: str, rest: str, out: Printer) -> Outcome:
    args = rest.split()
    result: dict[str, Any]
    stop = False
    if name == "echo":
        result = await client.echo(_echo_payload(rest))
    elif name == "move":
        if len(args) != 2:
            raise UsageError("move <x> <y>")
        try:
            x, y = _number(args[0]), _number(args[1])
        except ValueError:
            raise UsageError("move <x> <y> with numbers") from None
        result = await client.move(x, y)
    elif name == "whisper":
        parts = rest.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise UsageError("whisper <user_id> <text>")
        result = await client.whisper(int(parts[0]), parts[1])
    elif name == "ping":
        result = await client.ping()
    elif name == "reconnect":
        result = await client.reconnect()
    elif name == "logout":
        result = await client.logout()
        stop = True
    elif name in ("quit", "exit"):
        return Outcome(ok=True, stop=True)
    elif name == "help":
        out(HELP)
        return Outcome(ok=True)
    else:
        raise UsageError(f"unknown command {name!r} (try help)")
    out(f"ok {name} {to_json(result)}")
    return Outcome(ok=True, stop=stop)


def split_script(script: str) -> list[str]:
    """Commands of ``--run``: separated by ``;`` or newlines, blanks ignored."""
    parts = (part.strip() for chunk in script.splitlines() for part in chunk.split(";"))
    return [part for part in parts if part]


async def run_script(client: GameClient, script: str, out: Printer = stdout_line) -> bool:
    """Run the commands in order (all of them); ``True`` when every one succeeded."""
    all_ok = True
    for command in split_script(script):
        outcome = await execute(client, command, out)
        all_ok = all_ok and outcome.ok
        if outcome.stop:
            break
    return all_ok


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines of stdin from a daemon thread (works for ttys, pipes and files; never blocks exit)."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return lines


async def run_interactive(
    client: GameClient, session_over: asyncio.Event, out: Printer = stdout_line
) -> None:
    """Read commands until quit/logout/EOF or until the session ends on the server side."""
    out("info ready type help for commands")
    lines = _stdin_lines(asyncio.get_running_loop())
    while True:
        next_line = asyncio.ensure_future(lines.get())
        ended = asyncio.ensure_future(session_over.wait())
        done, _ = await asyncio.wait({next_line, ended}, return_when=asyncio.FIRST_COMPLETED)
        if next_line not in done:
            next_line.cancel()
            out("info session over")
            return
        ended.cancel()
        line = next_line.result()
        if line is None:
            return
        outcome = await execute(client, line, out)
        if outcome.stop:
            return
