"""The live fuzz's mutator: replayable from its seed, and right about what each input is.

The live test trusts each mutant's :class:`Expect` to decide which answer the server owes,
so the classification is checked here against the pure codec (the splitter the Gateway
runs, the decoder the GameServer runs), in-process and in well under a second.
"""

from __future__ import annotations

import random

import pytest

from protocol import BadPayload, FrameSplitter, decode_payload, read_header
from protocol.payload import decompress
from tests.support.fuzz import Expect, FrameMutator, Mutant

DRAWS = 3000


def mutants(seed: int, count: int = DRAWS) -> list[Mutant]:
    mutator = FrameMutator(random.Random(seed))
    return [mutator.mutant(seq) for seq in range(1, count + 1)]


def test_same_seed_same_mutants_other_seed_other_mutants() -> None:
    assert mutants(1234, 300) == mutants(1234, 300)
    assert mutants(1234, 300) != mutants(4321, 300)


def test_every_mutation_kind_shows_up() -> None:
    labels = {m.label for m in mutants(7)}
    assert labels == {
        "bit_flips", "payload_bit_flips", "random_type", "length_too_small",
        "length_too_large", "length_wrong", "reserved_bits", "deep_nesting", "huge_json",
        "invalid_utf8", "not_an_object", "broken_json", "lz4_garbage", "lz4_truncated",
        "lz4_bomb", "login_then_garbage", "half_frame", "random_bytes", "valid_request",
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_expectations_match_the_codec(seed: int) -> None:
    for m in mutants(seed):
        splitter = FrameSplitter(65536)
        frames = splitter.feed(m.data)
        if m.expect is Expect.VIOLATION:
            assert frames == [] and splitter.error is not None, m.label
        elif m.expect is Expect.ANSWER:
            assert frames == [m.data] and splitter.error is None, m.label
            header = read_header(m.data)
            assert (header.msg_type, header.sequence_id) == (m.msg_type, m.sequence_id)
            if m.bad_payload is True:
                with pytest.raises(BadPayload):
                    decode_payload(m.data, header.flags, 65536)
            elif m.bad_payload is False:
                assert isinstance(decode_payload(m.data, header.flags, 65536), dict), m.label


def test_hostile_sizes_reach_the_limits() -> None:
    """The big mutants are as big as the issue asks: near MAX_FRAME_BYTES, deep, bombs."""
    by_label: dict[str, list[Mutant]] = {}
    for m in mutants(11):
        by_label.setdefault(m.label, []).append(m)
    assert max(len(m.data) for m in by_label["huge_json"]) > 65536 - 64
    assert max(m.data.count(b"[") for m in by_label["deep_nesting"]) > 60_000
    assert all(len(m.data) <= 65536 + 4 for m in by_label["lz4_bomb"])
    with pytest.raises(BadPayload, match="expands beyond"):
        decompress(by_label["lz4_bomb"][0].data[12:], 65536)
