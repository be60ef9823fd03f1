"""Live fuzz: hostile bytes against a real Gateway and GameServer, a bystander unharmed.

For ``--fuzz-seconds`` (default 20; env GB_FUZZ_SECONDS) :data:`CONNECTIONS` connections
send mutants of valid frames (tests/support/fuzz.py) and reconnect whenever they are closed
or their byte stream is out of step. Meanwhile a logged-in bystander sends ECHO every
:data:`BYSTANDER_INTERVAL_S`. The run passes when

* neither process exited and both still answer ``/readyz``;
* the bystander got every answer right, each within :data:`BYSTANDER_MAX_RTT_S`;
* every answer a fuzz connection got while its stream was in step is the one
  docs/PROTOCOL.md promises (section 3: framing violations are kicked with PROTOCOL_ERROR,
  everything else is answered and the connection stays open), and both paths were taken;
* RSS grew by less than :data:`RSS_GROWTH_BOUND` per process;
* a fresh client logs in and MOVEs.

The seed is printed first and is in every failure message: ``--fuzz-seed N`` replays the
mutant sequence of every connection (the interleaving of connections is up to the OS).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from protocol import ErrorCode, KickReason, MsgType
from tests.conftest import SystemFactory
from tests.support.bystander import ANSWER_TIMEOUT_S, Bystander
from tests.support.cluster import Cluster
from tests.support.fuzz import REQUEST_TYPES, Expect, FrameMutator, Mutant
from tests.support.procstat import require_proc, rss_bytes
from tests.support.raw import Frame, RawClient
from tests.support.users import new_user_id

pytestmark = pytest.mark.live_fuzz

CONNECTIONS = 16
BYSTANDER_INTERVAL_S = 0.05
BYSTANDER_MAX_RTT_S = 1.0
#: How long a connection whose stream is out of step is read before it is dropped.
OUT_OF_STEP_READ_S = 0.2
#: Fuzz users are 1..32 (a LOGIN's bit flips cannot make them the bystander's 7-digit id).
FUZZ_USERS = range(1, 33)
#: RSS growth allowed per process over the run. What may legitimately stay allocated: the
#: GameServer's response caches (64 answers, at most 64 KiB each, per attached session: a
#: session holds a few before its connection is dropped, and there are at most 32 fuzz
#: users) and the Gateway's per-connection buffers (one frame of 64 KiB per connection),
#: plus allocator slack from churning many 64 KiB objects. A leak per connection or per
#: frame grows with the thousands of either in a run and crosses this.
RSS_GROWTH_BOUND = 50 << 20

#: Kicks an in-step connection may get while it waits for an answer (they end it).
ALLOWED_KICKS = {
    KickReason.DUPLICATE_LOGIN,  # another fuzz connection logged in as the same user
    KickReason.LOGIN_TIMEOUT,  # a connection that never logged in, after LOGIN_TIMEOUT_S
    KickReason.RATE_LIMITED,
}


def outcome(frame: Frame) -> str:
    """A short name of an answer: ``ERROR_RES:CODE``, ``LOGIN_RES:ok``, ``ECHO_RES``..."""
    name = MsgType(frame.msg_type).name if frame.msg_type in MsgType else str(frame.msg_type)
    if frame.msg_type == MsgType.ERROR_RES:
        return f"{name}:{frame.payload.get('code')}"
    if frame.msg_type in (MsgType.LOGIN_RES, MsgType.RECONNECT_RES):
        return f"{name}:{'ok' if frame.payload.get('ok') else frame.payload.get('error')}"
    if frame.msg_type == MsgType.KICKOUT_NTF:
        return f"{name}:{frame.payload.get('reason')}"
    return name


def allowed_answers(m: Mutant, logged_in: bool) -> set[str]:
    """What docs/PROTOCOL.md (sections 3, 4.1, 5) says answers an in-step frame."""
    assert m.msg_type is not None
    allowed = {f"ERROR_RES:{ErrorCode.RATE_LIMITED}"}
    msg_type = m.msg_type
    if msg_type not in REQUEST_TYPES:
        return allowed | {f"ERROR_RES:{ErrorCode.UNKNOWN_MESSAGE_TYPE}"}
    login_like = msg_type in (MsgType.LOGIN_REQ, MsgType.RECONNECT_REQ)
    response = MsgType(msg_type + 1).name
    if not logged_in and not login_like:
        return allowed | {f"ERROR_RES:{ErrorCode.NOT_LOGGED_IN}"}
    if logged_in and login_like:
        return allowed | {f"{response}:{ErrorCode.ALREADY_LOGGED_IN}"}
    if m.bad_payload is not False and msg_type != MsgType.LOGOUT_REQ:
        allowed.add(f"ERROR_RES:{ErrorCode.BAD_PAYLOAD}")
    if m.bad_payload is True:
        return allowed
    return allowed | {
        MsgType.LOGIN_REQ: {"LOGIN_RES:ok"},
        MsgType.RECONNECT_REQ: {f"RECONNECT_RES:{ErrorCode.INVALID_SESSION}",
                                f"RECONNECT_RES:{ErrorCode.SESSION_EXPIRED}"},
        MsgType.LOGOUT_REQ: {"LOGOUT_RES", f"ERROR_RES:{ErrorCode.INVALID_SESSION}"},
        MsgType.PING_REQ: {"PONG_RES"},
        MsgType.ECHO_REQ: {"ECHO_RES"},
        MsgType.MOVE_REQ: {"MOVE_RES", f"ERROR_RES:{ErrorCode.SERVER_BUSY}"},
        MsgType.WHISPER_REQ: {"WHISPER_RES"},
    }[MsgType(msg_type)]


@dataclass
class Tally:
    """What the fuzz saw, for the assertions and the printed summary."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    kicks: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    reused_after_error: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(text)


class ConnectionEnded(Exception):
    """The server closed this fuzz connection (after a kick, a LOGOUT, ...)."""


async def fuzz_connection(address: tuple[str, int], rng: random.Random, tally: Tally,
                          deadline: float) -> None:
    """Connections one after another until ``deadline``; each ends when the server closes
    it or its stream is out of step (then it is dropped, half the time with an RST)."""
    mutator = FrameMutator(rng, user_ids=FUZZ_USERS)
    while time.monotonic() < deadline:
        tally.connections += 1
        client = await RawClient.connect(address)
        try:
            await fuzz_one(client, mutator, tally, deadline)
        except ConnectionEnded:
            pass
        finally:
            if rng.random() < 0.5:
                client.writer.transport.abort()
            else:
                await client.close()


async def answer_to(client: RawClient, seq: int, tally: Tally) -> Frame:
    """The next frame answering a request; pushes are skipped, a kick ends the connection."""
    while True:
        try:
            frame = await client.next_frame(ANSWER_TIMEOUT_S)
        except TimeoutError:
            tally.fail(f"no answer to in-step seq {seq} within {ANSWER_TIMEOUT_S:g} s")
            raise ConnectionEnded from None
        except (ConnectionError, OSError) as exc:
            # Every way the server ends a connection on purpose sends a frame first
            # (LOGOUT_RES, ERROR_RES INVALID_SESSION or a KICKOUT_NTF), read above.
            tally.fail(f"closed without answering in-step seq {seq}: {exc!r}")
            raise ConnectionEnded from exc
        if frame.msg_type == MsgType.KICKOUT_NTF:
            reason = frame.payload.get("reason")
            tally.kicks[str(reason)] += 1
            if reason not in ALLOWED_KICKS:
                tally.fail(f"in-step connection kicked with {reason} while waiting for seq {seq}")
            raise ConnectionEnded
        if frame.sequence_id == 0 and frame.msg_type == MsgType.WHISPER_NTF:
            continue
        if frame.sequence_id != seq:
            tally.fail(f"answer out of step: waited for seq {seq}, got {frame}")
        return frame


async def fuzz_one(client: RawClient, mutator: FrameMutator, tally: Tally,
                   deadline: float) -> None:
    rng = mutator.rng
    seq = 0
    logged_in = False
    last_was_error = False
    if rng.random() < 0.5:
        seq += 1
        await client.send(mutator.valid_frame(seq, MsgType.LOGIN_REQ)[1])
        logged_in = outcome(await answer_to(client, seq, tally)) == "LOGIN_RES:ok"
    while time.monotonic() < deadline:
        seq += 1
        m = mutator.mutant(seq)
        tally.sent[m.label] += 1
        try:
            await client.send(m.data)
        except (ConnectionError, OSError) as exc:
            raise ConnectionEnded from exc
        if m.expect is Expect.VIOLATION:
            frames, closed = await read_until_closed(client, ANSWER_TIMEOUT_S)
            kicks = [outcome(f) for f in frames if f.msg_type == MsgType.KICKOUT_NTF]
            kicked_for_it = kicks == [f"KICKOUT_NTF:{KickReason.PROTOCOL_ERROR}"]
            # Another connection's LOGIN (DUPLICATE_LOGIN) may have got there first.
            kicked_before = bool(kicks) and kicks[0].removeprefix("KICKOUT_NTF:") in ALLOWED_KICKS
            if not closed or not (kicked_for_it or kicked_before):
                tally.fail(f"{m.label}: expected KICKOUT_NTF PROTOCOL_ERROR then close, got "
                           f"{frames!r} ({m.data[:24].hex()})")
            for kick in kicks:
                tally.kicks[kick.removeprefix("KICKOUT_NTF:")] += 1
            return
        if m.expect is Expect.UNKNOWN:
            for _ in range(rng.randint(0, 2)):
                with contextlib.suppress(ConnectionError, OSError):
                    await client.send(mutator.mutant(seq).data)
            for frame in (await read_until_closed(client, OUT_OF_STEP_READ_S))[0]:
                tally.answers[f"out-of-step {outcome(frame)}"] += 1
            return
        answer = await answer_to(client, seq, tally)
        name = outcome(answer)
        tally.answers[name] += 1
        allowed = allowed_answers(m, logged_in)
        if name not in allowed:
            tally.fail(f"{m.label} type {m.msg_type} logged_in={logged_in}: got {name}, "
                       f"documented {sorted(allowed)}; payload {m.data[12:80]!r}")
        if last_was_error:
            tally.reused_after_error += 1
        last_was_error = answer.msg_type == MsgType.ERROR_RES
        if name == "LOGIN_RES:ok":
            logged_in = True
        if name in ("LOGOUT_RES", f"ERROR_RES:{ErrorCode.INVALID_SESSION}"):
            frames, closed = await read_until_closed(client, ANSWER_TIMEOUT_S)
            if not closed or any(f.msg_type != MsgType.WHISPER_NTF for f in frames):
                tally.fail(f"after {name} expected close, got {frames!r} (closed={closed})")
            return


async def read_until_closed(client: RawClient, timeout: float) -> tuple[list[Frame], bool]:
    """Frames until the server closes, or until ``timeout``; and whether it closed."""
    frames: list[Frame] = []
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            frames.append(await client.next_frame(left))
        except TimeoutError:
            return frames, False
        except (ConnectionError, OSError):
            return frames, True
    return frames, False


async def test_live_fuzz(system_factory: SystemFactory, fuzz_duration: float,
                         fuzz_seed: int) -> None:
    print(f"\nlive fuzz: seed {fuzz_seed}, {fuzz_duration:g} s, {CONNECTIONS} connections "
          f"(replay: pytest {__file__} --fuzz-seed {fuzz_seed})")
    require_proc()
    cluster: Cluster = system_factory()
    gateway, gameserver = cluster.gateway.process, cluster.gameserver.process
    assert gateway.pid is not None and gameserver.pid is not None
    rss_before = {p.name: rss_bytes(p.pid) for p in (gateway, gameserver) if p.pid}
    tally = Tally()

    bystander = await Bystander.start(cluster.gateway_address, BYSTANDER_INTERVAL_S,
                                      BYSTANDER_MAX_RTT_S)
    deadline = time.monotonic() + fuzz_duration
    fuzzers = [
        fuzz_connection(cluster.gateway_address, random.Random(f"{fuzz_seed}/{i}"), tally,
                        deadline)
        for i in range(CONNECTIONS)
    ]
    results = await asyncio.gather(*fuzzers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.fail(f"a fuzz task raised {result!r}")
    await bystander.stop()
    tally.failures.extend(bystander.problems)

    rss_after = {p.name: rss_bytes(p.pid) for p in (gateway, gameserver) if p.pid}
    rtts = sorted(bystander.round_trips)
    summary = (
        f"seed {fuzz_seed}: {sum(tally.sent.values())} mutants on {tally.connections} "
        f"connections; kicks {dict(tally.kicks)}; answers {dict(tally.answers)}; "
        f"bystander {len(rtts)} ECHOs, max {rtts[-1] if rtts else 0:.3f} s; RSS before "
        f"{rss_before} after {rss_after}"
    )
    print(summary)
    assert not tally.failures, f"{summary}\n" + "\n".join(tally.failures)
    assert gateway.running and gameserver.running, summary
    assert gateway.readyz_status() == 200 and gameserver.readyz_status() == 200, summary
    assert len(rtts) >= fuzz_duration / (BYSTANDER_INTERVAL_S + BYSTANDER_MAX_RTT_S), summary

    # The fuzz reached both sides of PROTOCOL.md section 3, and error answers left
    # connections usable.
    assert tally.kicks[KickReason.PROTOCOL_ERROR] > 0, summary
    for code in (ErrorCode.BAD_PAYLOAD, ErrorCode.UNKNOWN_MESSAGE_TYPE,
                 ErrorCode.NOT_LOGGED_IN):
        assert tally.answers[f"ERROR_RES:{code}"] > 0, f"no {code} answer; {summary}"
    assert tally.reused_after_error > 0, summary
    protocol_errors = gateway.metric("gateway_protocol_errors_total")
    assert protocol_errors >= tally.kicks[KickReason.PROTOCOL_ERROR], summary

    for name, before in rss_before.items():
        grew = rss_after[name] - before
        assert grew < RSS_GROWTH_BOUND, f"{name} RSS grew by {grew >> 20} MiB; {summary}"

    fresh = await RawClient.connect(cluster.gateway_address)
    await fresh.login(new_user_id())
    moved = await fresh.request(MsgType.MOVE_REQ, 2, {"x": 3, "y": 4})
    assert (moved.msg_type, moved.payload) == (MsgType.MOVE_RES,
                                               {"x": 3.0, "y": 4.0, "moves": 1}), summary
    await fresh.close()
