"""HMAC login tokens: the GameServer's only defence against a client claiming any user id."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.auth import mint_token, sign, verify_token

SECRET = b"test-secret"
NOW = 1_700_000_000.0


def test_minted_token_verifies() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    assert verify_token(SECRET, 42, token, now=NOW) is None
    assert verify_token(SECRET, 42, token, now=NOW + 59) is None


def test_token_format() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    expires, signature = token.split(".")
    assert int(expires) == int(NOW) + 60
    assert signature == sign(SECRET, 42, int(expires))
    assert len(signature) == 64
    int(signature, 16)


def test_token_is_valid_up_to_and_including_its_expiry_second() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    assert verify_token(SECRET, 42, token, now=NOW + 60) is None
    assert verify_token(SECRET, 42, token, now=NOW + 60.001) == "token expired"


def test_expired_token() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    assert verify_token(SECRET, 42, token, now=NOW + 3600) == "token expired"


def test_default_clock_is_now() -> None:
    assert verify_token(SECRET, 1, mint_token(SECRET, 1)) is None
    assert verify_token(SECRET, 1, mint_token(SECRET, 1, ttl_s=-10)) == "token expired"


def test_wrong_user_is_rejected() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    assert verify_token(SECRET, 43, token, now=NOW) == "bad signature"


def test_wrong_secret_is_rejected() -> None:
    token = mint_token(b"other-secret", 42, ttl_s=60, now=NOW)
    assert verify_token(SECRET, 42, token, now=NOW) == "bad signature"


def test_forged_signature_is_rejected() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    expires, signature = token.split(".")
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert verify_token(SECRET, 42, f"{expires}.{flipped}", now=NOW) == "bad signature"
    assert verify_token(SECRET, 42, f"{expires}.{signature.upper()}", now=NOW) == "bad signature"
    assert verify_token(SECRET, 42, f"{expires}.{signature[:-1]}", now=NOW) == "bad signature"
    assert verify_token(SECRET, 42, f"{expires}.", now=NOW) == "bad signature"


def test_extending_the_expiry_breaks_the_signature() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    expires, signature = token.split(".")
    later = f"{int(expires) + 86400}.{signature}"
    assert verify_token(SECRET, 42, later, now=NOW) == "bad signature"


def test_expired_token_with_bad_signature_reports_bad_signature() -> None:
    # The signature is checked first: an attacker learns nothing from the expiry.
    assert verify_token(SECRET, 42, f"{int(NOW) - 10}.{'0' * 64}", now=NOW) == "bad signature"


@pytest.mark.parametrize(
    "token",
    [None, 123, 1.5, b"123.abc", ["123", "abc"], {"token": "x"}, "", "abc", "123",
     "1.2.3", "123.abc.def", "..."],
)
def test_malformed_tokens(token: object) -> None:
    assert verify_token(SECRET, 42, token, now=NOW) == "malformed token"


@pytest.mark.parametrize(
    "token", [".abc", "abc.def", "-5.abc", "+5.abc", " 5.abc", "1e9.abc", "1234567890123.abc"]
)
def test_malformed_expiry(token: str) -> None:
    assert verify_token(SECRET, 42, token, now=NOW) == "malformed expiry"


def test_non_ascii_signature_is_rejected_not_crashing() -> None:
    token = mint_token(SECRET, 42, ttl_s=60, now=NOW)
    expires = token.split(".")[0]
    assert verify_token(SECRET, 42, f"{expires}.é\udcff", now=NOW) == "bad signature"


@given(
    st.binary(min_size=1, max_size=64),
    st.integers(0, 2**63 - 1),
    st.integers(1, 10**7),
)
def test_any_minted_token_verifies_and_binds_the_user(
    secret: bytes, user_id: int, ttl: int
) -> None:
    token = mint_token(secret, user_id, ttl_s=ttl, now=NOW)
    assert verify_token(secret, user_id, token, now=NOW) is None
    assert verify_token(secret, user_id + 1, token, now=NOW) == "bad signature"
    assert verify_token(secret, user_id, token, now=NOW + ttl + 1) == "token expired"


@given(st.text(max_size=80))
def test_arbitrary_text_never_raises(token: str) -> None:
    result = verify_token(SECRET, 42, token, now=NOW)
    assert result is None or isinstance(result, str)
