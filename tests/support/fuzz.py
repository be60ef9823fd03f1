"""A seeded generator of hostile client byte strings, built from valid v1 frames.

The hypothesis tests of the pure codec (tests/test_protocol_*.py) explore the codec's input
space and shrink failures, but they cannot run against live processes: a live fuzz needs a
stream of inputs that goes on for as long as the run lasts, is replayable from one printed
seed, and says for each input what the protocol promises in answer. Hypothesis offers
neither an endless stream nor a seed that replays across asyncio tasks, so this is a small
hand-rolled mutator driven by a :class:`random.Random` - the same seed gives the same
mutants, byte for byte.

Each :class:`Mutant` says what the Gateway must do with it (:class:`Expect`), so the live
test can check the documented answers (docs/PROTOCOL.md section 3) and not only "nothing
crashed".
"""

from __future__ import annotations

import enum
import random
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass

import lz4.frame
import orjson

from protocol import FLAG_LZ4, MsgType, encode_frame
from protocol.frame import HEADER, HEADER_SIZE, MIN_LENGTH

#: Requests a client may send, i.e. the keys of ``protocol.RESPONSE_TYPE``.
REQUEST_TYPES: tuple[int, ...] = (
    MsgType.LOGIN_REQ, MsgType.RECONNECT_REQ, MsgType.LOGOUT_REQ, MsgType.PING_REQ,
    MsgType.ECHO_REQ, MsgType.MOVE_REQ, MsgType.WHISPER_REQ,
)
#: Requests whose handler reads the payload; LOGOUT_REQ ignores its payload.
PAYLOAD_READING_TYPES: tuple[int, ...] = tuple(
    t for t in REQUEST_TYPES if t != MsgType.LOGOUT_REQ
)


class Expect(enum.Enum):
    """What the byte string does to the connection's byte stream."""

    #: One complete, well-framed frame: the server answers it with its sequence id (or
    #: with a kick/close for the messages that end a connection) and the stream stays in
    #: step.
    ANSWER = "answer"
    #: A framing violation: KICKOUT_NTF PROTOCOL_ERROR, then close.
    VIOLATION = "violation"
    #: Anything may happen: a half frame the Gateway waits on, a length that swallows the
    #: next frame, bit flips that may land anywhere. The stream is out of step afterwards.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Mutant:
    """One hostile write. ``msg_type``/``sequence_id`` are set for :attr:`Expect.ANSWER`.

    ``bad_payload`` is True when no handler that reads the payload can accept it (not a
    UTF-8 JSON object, bad LZ4), False when it is a well-formed JSON object, None when the
    mutation may or may not have kept it valid.
    """

    label: str
    data: bytes
    expect: Expect
    msg_type: int | None = None
    sequence_id: int | None = None
    bad_payload: bool | None = None


class FrameMutator:
    """Hostile inputs from valid frames; deterministic for a given ``random.Random``.

    ``user_ids`` are the ids LOGIN and WHISPER payloads use: keep them apart from the ids of
    clients that must not be kicked by a fuzzed LOGIN (a bit flip changes a digit, never the
    number of digits, so small ids cannot turn into a seven-digit bystander's id).
    """

    def __init__(
        self,
        rng: random.Random,
        max_frame_bytes: int = 65536,
        user_ids: range = range(1, 33),
    ) -> None:
        self.rng = rng
        self.max_frame_bytes = max_frame_bytes
        self.max_payload = max_frame_bytes - MIN_LENGTH
        self.user_ids = user_ids
        self._mutations: list[Callable[[int], Mutant]] = [
            self.bit_flips, self.payload_bit_flips, self.random_type, self.length_too_small,
            self.length_too_large, self.length_wrong, self.reserved_bits, self.deep_nesting,
            self.huge_json, self.invalid_utf8, self.not_an_object, self.broken_json,
            self.lz4_garbage, self.lz4_truncated, self.lz4_bomb, self.login_then_garbage,
            self.half_frame, self.random_bytes, self.valid_request,
        ]

    # --- the entry point ------------------------------------------------------------------

    def mutant(self, seq: int) -> Mutant:
        """One hostile input, chosen uniformly among the mutation kinds; ``seq`` is the
        sequence id to use where the mutation keeps the frame answerable."""
        return self.rng.choice(self._mutations)(seq)

    # --- valid material -------------------------------------------------------------------

    def valid_payload(self, msg_type: int) -> dict[str, object]:
        """A payload the handler of ``msg_type`` accepts (a small JSON object otherwise)."""
        rng = self.rng
        if msg_type == MsgType.LOGIN_REQ:
            payload: dict[str, object] = {"user_id": rng.choice(self.user_ids)}
            if rng.random() < 0.5:
                payload["accept_compression"] = ["lz4"]
            return payload
        if msg_type == MsgType.RECONNECT_REQ:
            key = "".join(rng.choices(string.ascii_letters + string.digits, k=32))
            return {"session_id": rng.randint(1, 10_000), "reconnect_key": key}
        if msg_type == MsgType.PING_REQ:
            return {"client_time_ms": rng.randint(0, 2**40)}
        if msg_type == MsgType.MOVE_REQ:
            return {"x": rng.uniform(-1e6, 1e6), "y": rng.randint(-1000, 1000)}
        if msg_type == MsgType.WHISPER_REQ:
            return {"to_user_id": rng.choice(self.user_ids), "text": self._text(40)}
        return {self._text(8): self._text(20) for _ in range(rng.randint(0, 4))}

    def valid_frame(self, seq: int, msg_type: int | None = None) -> tuple[int, bytes]:
        """A correct request frame (``msg_type`` random among the requests if not given)."""
        if msg_type is None:
            msg_type = self.rng.choice(REQUEST_TYPES)
        body = orjson.dumps(self.valid_payload(msg_type))
        if self.rng.random() < 0.2:
            return msg_type, encode_frame(msg_type, seq, lz4.frame.compress(body), FLAG_LZ4)
        return msg_type, encode_frame(msg_type, seq, body)

    def _text(self, max_len: int) -> str:
        return "".join(self.rng.choices(string.ascii_letters, k=self.rng.randint(1, max_len)))

    def _payload_type(self) -> int:
        return self.rng.choice(PAYLOAD_READING_TYPES)

    # --- mutations: anything may happen ---------------------------------------------------

    def bit_flips(self, seq: int) -> Mutant:
        _, frame = self.valid_frame(seq)
        data = bytearray(frame)
        for _ in range(self.rng.randint(1, 8)):
            bit = self.rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        return Mutant("bit_flips", bytes(data), Expect.UNKNOWN)

    def length_wrong(self, seq: int) -> Mutant:
        """A length inside the limits that disagrees with the bytes sent: the Gateway waits
        for more, or cuts the frame short and reads the rest as the next header."""
        _, frame = self.valid_frame(seq)
        actual = len(frame) - 4
        length = actual
        while length == actual:
            length = self.rng.randint(MIN_LENGTH, min(self.max_frame_bytes, actual + 64))
        return Mutant("length_wrong", struct.pack(">I", length) + frame[4:], Expect.UNKNOWN)

    def login_then_garbage(self, seq: int) -> Mutant:
        _, login = self.valid_frame(seq, MsgType.LOGIN_REQ)
        garbage = self.rng.randbytes(self.rng.randint(1, 64))
        return Mutant("login_then_garbage", login + garbage, Expect.UNKNOWN)

    def half_frame(self, seq: int) -> Mutant:
        _, frame = self.valid_frame(seq)
        cut = self.rng.randint(1, len(frame) - 1)
        return Mutant("half_frame", frame[:cut], Expect.UNKNOWN)

    def random_bytes(self, seq: int) -> Mutant:
        return Mutant("random_bytes", self.rng.randbytes(self.rng.randint(1, 256)),
                      Expect.UNKNOWN)

    # --- mutations: framing violations ----------------------------------------------------

    def length_too_small(self, seq: int) -> Mutant:
        length = self.rng.randint(0, MIN_LENGTH - 1)
        tail = self.rng.randbytes(self.rng.randint(0, 16))
        return Mutant("length_too_small", struct.pack(">I", length) + tail, Expect.VIOLATION)

    def length_too_large(self, seq: int) -> Mutant:
        """Refused as soon as the four length bytes arrive, before any body is buffered."""
        length = self.rng.choice([
            self.max_frame_bytes + 1,
            self.rng.randint(self.max_frame_bytes + 1, 2**32 - 1),
            2**32 - 1,
        ])
        tail = self.rng.randbytes(self.rng.randint(0, 64))
        return Mutant("length_too_large", struct.pack(">I", length) + tail, Expect.VIOLATION)

    def reserved_bits(self, seq: int) -> Mutant:
        """Unknown flag bits (1-7), a nonzero reserved byte, or both, on a valid frame."""
        _, frame = self.valid_frame(seq)
        length, msg_type, flags, _, _ = HEADER.unpack_from(frame)
        which = self.rng.choice(["flags", "reserved", "both"])
        reserved = self.rng.randint(1, 255) if which != "flags" else 0
        if which != "reserved":
            flags |= self.rng.randint(1, 127) << 1
        data = HEADER.pack(length, msg_type, flags, reserved, seq) + frame[HEADER_SIZE:]
        return Mutant("reserved_bits", data, Expect.VIOLATION)

    # --- mutations: well-framed, answered with an error or a response -----------------------

    def payload_bit_flips(self, seq: int) -> Mutant:
        """Flips inside the payload only: the frame stays in step, the payload may break."""
        msg_type, frame = self.valid_frame(seq, self._payload_type())
        if len(frame) == HEADER_SIZE:
            return Mutant("payload_bit_flips", frame, Expect.ANSWER, msg_type, seq, False)
        data = bytearray(frame)
        for _ in range(self.rng.randint(1, 4)):
            bit = self.rng.randrange(HEADER_SIZE * 8, len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        return Mutant("payload_bit_flips", bytes(data), Expect.ANSWER, msg_type, seq, None)

    def random_type(self, seq: int) -> Mutant:
        msg_type = self.rng.choice([
            self.rng.randint(0, 0xFFFF), 0, 0xFFFF,
            self.rng.choice([t for t in MsgType if t not in REQUEST_TYPES]),
        ])
        body = orjson.dumps({self._text(6): self.rng.randint(0, 100)})
        return Mutant("random_type", encode_frame(msg_type, seq, body), Expect.ANSWER,
                      msg_type, seq, False)

    def valid_request(self, seq: int) -> Mutant:
        msg_type, frame = self.valid_frame(seq)
        return Mutant("valid_request", frame, Expect.ANSWER, msg_type, seq, False)

    def _bad(self, label: str, seq: int, body: bytes, flags: int = 0) -> Mutant:
        msg_type = self._payload_type()
        return Mutant(label, encode_frame(msg_type, seq, body, flags), Expect.ANSWER,
                      msg_type, seq, True)

    def deep_nesting(self, seq: int) -> Mutant:
        """Nesting far beyond orjson's depth limit (1024): balanced, or a frame full of '['."""
        if self.rng.random() < 0.5:
            depth = self.rng.randint(1_100, (self.max_payload - 6) // 2)
            body = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
        else:
            body = b'{"a":' + b"[" * (self.max_payload - 5)
        return self._bad("deep_nesting", seq, body)

    def huge_json(self, seq: int) -> Mutant:
        """A valid object filling a frame to within a few bytes of MAX_FRAME_BYTES."""
        msg_type = MsgType.ECHO_REQ
        size = self.max_payload - self.rng.randint(0, 64)
        body = b'{"blob":"' + b"x" * (size - 11) + b'"}'
        return Mutant("huge_json", encode_frame(msg_type, seq, body), Expect.ANSWER,
                      msg_type, seq, False)

    def invalid_utf8(self, seq: int) -> Mutant:
        junk = bytes(self.rng.choice([0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFE, 0xFF])
                     for _ in range(self.rng.randint(1, 8)))
        return self._bad("invalid_utf8", seq, b'{"a":"' + junk + b'"}')

    def not_an_object(self, seq: int) -> Mutant:
        value: object = self.rng.choice([[1, 2], "text", 42, 1.5, None, True, [], [{}]])
        return self._bad("not_an_object", seq, orjson.dumps(value))

    def broken_json(self, seq: int) -> Mutant:
        body = orjson.dumps(self.valid_payload(MsgType.ECHO_REQ))
        cut = body[: self.rng.randint(1, max(1, len(body) - 1))]
        return self._bad("broken_json", seq, self.rng.choice([cut, b"{not json", b"{,}"]))

    def lz4_garbage(self, seq: int) -> Mutant:
        return self._bad("lz4_garbage", seq, self.rng.randbytes(self.rng.randint(0, 512)) or
                         b"\x00", FLAG_LZ4)

    def lz4_truncated(self, seq: int) -> Mutant:
        packed = lz4.frame.compress(b'{"a":"' + b"y" * self.rng.randint(100, 5000) + b'"}')
        return self._bad("lz4_truncated", seq, packed[: self.rng.randint(1, len(packed) - 1)],
                         FLAG_LZ4)

    def lz4_bomb(self, seq: int) -> Mutant:
        """Valid LZ4 of valid JSON that inflates to megabytes: refused by its size alone."""
        bomb = _bomb(self.rng.choice([2, 8]))
        if len(bomb) > self.max_payload:
            bomb = _bomb(1)
        return self._bad("lz4_bomb", seq, bomb, FLAG_LZ4)


_bombs: dict[int, bytes] = {}


def _bomb(megabytes: int) -> bytes:
    """LZ4 of a JSON object of ``megabytes`` MiB (cached: compressing is the slow part)."""
    if megabytes not in _bombs:
        _bombs[megabytes] = lz4.frame.compress(
            b'{"a":"' + b"0" * (megabytes << 20) + b'"}')
    return _bombs[megabytes]
