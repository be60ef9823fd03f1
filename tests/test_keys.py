"""servicekit.keys: every key of one operation shares a hash slot (Redis Cluster), session
ids stay JavaScript-safe, prefixes keep deployments apart; and every Lua script reaches only
keys it declared in KEYS (a script building a key name itself would fail on a cluster)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.crc import key_slot

from servicekit.config import ConfigError, load_config
from servicekit.keys import (
    MAX_SESSION_ID,
    Keys,
    check_prefix,
    slot_of_session,
    slot_of_user,
    valid_session_id,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("services/gameserver/lua/*.lua"),
                  *ROOT.glob("libs/servicekit/lua/*.lua")])


def _slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("user_id", [0, 1, 42, 7_000_001, 2**40 + 3, 2**63 - 1])
def test_a_users_keys_and_their_sessions_keys_share_one_slot(user_id: int) -> None:
    keys = Keys("gb:")
    for _ in range(20):
        session_id = keys.new_session_id(user_id)
        assert valid_session_id(session_id) and session_id <= MAX_SESSION_ID < 2**53
        assert slot_of_session(session_id) == slot_of_user(user_id)
        slots = {_slot(k) for k in (keys.user_session(user_id), keys.player(user_id),
                                    *keys.session_keys(session_id))}
        assert slots == {slot_of_user(user_id)}


def test_session_ids_are_drawn_at_random_and_spread_over_all_slots() -> None:
    keys = Keys()
    ids = {keys.new_session_id(5) for _ in range(1000)}
    assert len(ids) == 1000
    users_slots = {slot_of_user(u) for u in range(20_000)}
    assert len(users_slots) > 12_000  # 20,000 users over 16,384 slots


def test_every_slot_has_a_session_tag() -> None:
    keys = Keys()
    for slot in (0, 1, 5461, 10922, 16383):
        session_id = (slot << 39) | 12345
        assert _slot(keys.session(session_id)) == slot


def test_the_registry_is_one_slot() -> None:
    keys = Keys("eu1:gb:")
    assert {_slot(keys.node(n)) for n in (1, 2, 65535)} == {_slot(keys.nodes)}


def test_prefixes_keep_deployments_apart() -> None:
    a, b = Keys("a:"), Keys("b:")
    session_id = a.new_session_id(9)
    names_a = {a.user_session(9), a.player(9), *a.session_keys(session_id), a.node(1), a.nodes}
    names_b = {b.user_session(9), b.player(9), *b.session_keys(session_id), b.node(1), b.nodes}
    assert all(n.startswith("a:") for n in names_a) and not names_a & names_b


@pytest.mark.parametrize("bad", ["", "g{b}:", "gb :", "a}", "x" * 65, "tab\t"])
def test_a_bad_prefix_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="REDIS_KEY_PREFIX"):
        check_prefix(bad)


def test_a_bad_prefix_stops_a_service_at_start() -> None:
    from gameserver.config import GameServerConfig

    with pytest.raises(ConfigError, match="REDIS_KEY_PREFIX"):
        load_config(GameServerConfig, [], {"REDIS_KEY_PREFIX": "g{b}:"}, prog="gs",
                    description="")
    config = load_config(GameServerConfig, [], {"REDIS_KEY_PREFIX": "eu1:gb:"}, prog="gs",
                         description="")
    assert config.keys.player(1) == "eu1:gb:{u:1}:player"


@pytest.mark.parametrize("bad", [0, -1, 2**53, 5 << 39])
def test_session_ids_the_system_never_issues_are_recognised(bad: int) -> None:
    assert not valid_session_id(bad)


REDIS_CALL = re.compile(r"redis\.call\(\s*'(\w+)'\s*,\s*([^,)]+)")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_touches_only_keys_it_declared(script: Path) -> None:
    calls = REDIS_CALL.findall(script.read_text())
    assert calls, "no redis.call found: the pattern is stale"
    for command, first_argument in calls:
        assert first_argument.strip().startswith("KEYS["), (
            f"{script.name}: {command} {first_argument}: a key not taken from KEYS")
