"""The cluster key file, the choice of the key to dial with, and the refusal record: pure
parts of CURVE, tested in-process (the real sockets are in tests/test_e2e_curve.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import zmq

from servicekit import zap
from servicekit.config import ConfigError
from servicekit.curve import (
    CurveMismatch,
    ServerKeys,
    load_keys,
    parse_keys,
    server_key,
)


def secret() -> str:
    return zmq.curve_keypair()[1].decode()


def secret_with(char: str) -> str:
    """A valid secret key containing ``char`` (Z85 digits include '#', '.', ...)."""
    while True:
        key = secret()
        if char in key:
            return key


def test_one_key_is_used_and_accepted() -> None:
    key = secret()
    keys = parse_keys(key + "\n", "f")
    assert keys.secret == key.encode()
    assert keys.public == zmq.curve_public(key.encode())
    assert keys.accepted == {keys.public}


def test_further_keys_are_accepted_and_the_first_is_used() -> None:
    first, second = secret(), secret()
    keys = parse_keys(f"\n  {first}  \n\n{second}\n", "f")
    assert keys.secret == first.encode()
    assert keys.accepted == {zmq.curve_public(first.encode()),
                             zmq.curve_public(second.encode())}


def test_a_key_may_contain_or_start_with_a_hash() -> None:
    key = secret_with("#")
    assert parse_keys(key, "f").secret == key.encode()
    starting = "#" + key[1:]
    try:
        zmq.curve_public(starting.encode())
    except zmq.ZMQError:
        return  # that group overflows: not a key, nothing to check
    assert parse_keys(starting, "f").secret == starting.encode()


@pytest.mark.parametrize("text, message", [
    ("", "holds no key; create one with: python -m gameserver keygen > FILE"),
    ("\n \n", "holds no key"),
    ("too-short-to-be-a-key", "line 1: not a Z85 CURVE secret key (expected 40 characters, "
                              "got 21)"),
    ("~" * 40, "line 1: not a Z85 CURVE secret key"),
])
def test_a_bad_file_is_named_and_never_quoted(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_keys(text, "CLUSTER_CURVE_SECRET_FILE /keys/k")
    assert str(raised.value).startswith("CLUSTER_CURVE_SECRET_FILE /keys/k")
    assert message in str(raised.value)
    if text.strip():
        assert text.strip() not in str(raised.value)


def test_load_keys(tmp_path: Path) -> None:
    assert load_keys("") is None
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_keys(str(tmp_path / "missing.key"))
    path = tmp_path / "cluster.key"
    key = secret()
    path.write_text(key + "\n")
    keys = load_keys(str(path))
    assert keys is not None and keys.secret == key.encode()


def test_which_key_to_dial_with() -> None:
    ours, other = parse_keys(secret(), "f"), parse_keys(secret(), "f")
    both = parse_keys(f"{secret()}\n{other.secret.decode()}", "f")
    assert server_key(None, "") is None  # both plaintext
    assert server_key(ours, ours.public.decode()) == ours.public
    assert server_key(both, other.public.decode()) == other.public  # mid-rotation
    with pytest.raises(CurveMismatch, match="requires CURVE"):
        server_key(None, ours.public.decode())
    with pytest.raises(CurveMismatch, match="runs without CURVE"):
        server_key(ours, "")
    with pytest.raises(CurveMismatch, match="not one this process accepts"):
        server_key(ours, other.public.decode())


def test_a_disagreement_is_logged_once_until_it_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    ours, other = parse_keys(secret(), "f"), parse_keys(secret(), "f")
    keys = ServerKeys(ours, logging.getLogger("test.curve"), "GameServer")
    with caplog.at_level(logging.INFO, "test.curve"):
        for _ in range(3):
            with pytest.raises(CurveMismatch):
                keys.for_node(2, "tcp://h:9001", other.public.decode())
        with pytest.raises(CurveMismatch):
            keys.for_node(2, "tcp://h:9001", "")
        assert keys.for_node(2, "tcp://h:9001", ours.public.decode()) == ours.public
        assert keys.for_node(2, "tcp://h:9001", ours.public.decode()) == ours.public
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Not dialling GameServer node 2 at tcp://h:9001: its CURVE key is not one this "
        "process accepts (CLUSTER_CURVE_SECRET_FILE differs)",
        "Not dialling GameServer node 2 at tcp://h:9001: it runs without CURVE and this "
        "process has CLUSTER_CURVE_SECRET_FILE set (set it on every service)",
        "Dialling GameServer node 2 at tcp://h:9001: CURVE settings agree now",
    ]


def test_refusals_are_all_counted_and_each_address_logged_once(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[tuple[str, str]] = []
    refusals = zap.Refusals(lambda port, reason: counted.append((port, reason)))
    monkeypatch.setattr(zap, "MAX_REMEMBERED_PEERS", 3)
    with caplog.at_level(logging.WARNING, "servicekit.zap"):
        for _ in range(5):
            refusals.refused("mesh", "10.0.0.7", "unknown_key", "no key")
        refusals.refused("p2p", "10.0.0.7", "unknown_key", "no key")
        refusals.refused("mesh", None, "not_curve", "no CURVE")
        refusals.refused("mesh", None, "not_curve", "no CURVE")
        refusals.refused("mesh", "10.0.0.8", "unknown_key", "no key")  # past the cap
    assert len(counted) == 9
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        "Refused a ZeroMQ peer at 10.0.0.7 on the mesh port: no key",
        "Refused a ZeroMQ peer at 10.0.0.7 on the p2p port: no key",
        "Refused a ZeroMQ peer on the mesh port: no CURVE",
    ]
