"""HMAC login tokens: ``"<expires_unix>.<hex HMAC-SHA256(secret, "<user_id>.<expires_unix>")>"``.

A lobby or auth service that knows the shared secret can mint tokens without ever talking to
the game servers; the GameServer only verifies. Pure functions, so the test client can mint.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: bytes, user_id: int, expires_unix: int) -> str:
    message = f"{user_id}.{expires_unix}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def mint_token(secret: bytes, user_id: int, ttl_s: int = 3600, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{sign(secret, user_id, expires)}"


def verify_token(
    secret: bytes, user_id: int, token: object, now: float | None = None
) -> str | None:
    """``None`` when the token is valid, else a short reason (for logs, never sent as-is)."""
    if not isinstance(token, str) or token.count(".") != 1:
        return "malformed token"
    expires_text, signature = token.split(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return "malformed expiry"
    expires = int(expires_text)
    expected = sign(secret, user_id, expires)
    # Compare before looking at the expiry so timing says nothing about which check failed.
    signature_ok = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
    if not signature_ok:
        return "bad signature"
    if expires < (time.time() if now is None else now):
        return "token expired"
    return None
