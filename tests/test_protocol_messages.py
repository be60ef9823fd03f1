"""Message numbers are a contract with every shipped client: pin them down."""

from __future__ import annotations

from protocol import FIRST_NOTIFICATION_TYPE, RESPONSE_TYPE, ErrorCode, KickReason, MsgType


def test_message_type_numbers_never_change() -> None:
    assert {m.name: m.value for m in MsgType} == {
        "LOGIN_REQ": 1, "LOGIN_RES": 2, "RECONNECT_REQ": 3, "RECONNECT_RES": 4,
        "LOGOUT_REQ": 5, "LOGOUT_RES": 6, "PING_REQ": 7, "PONG_RES": 8,
        "ECHO_REQ": 9, "ECHO_RES": 10, "MOVE_REQ": 11, "MOVE_RES": 12,
        "WHISPER_REQ": 13, "WHISPER_RES": 14,
        "ERROR_RES": 100, "KICKOUT_NTF": 200, "WHISPER_NTF": 201,
    }


def test_every_request_has_the_next_number_as_response() -> None:
    requests = [m for m in MsgType if m.value < 100 and m.value % 2 == 1]
    assert set(RESPONSE_TYPE) == set(requests)
    for request, response in RESPONSE_TYPE.items():
        assert response == request + 1
        assert MsgType(request).name.endswith("_REQ")
        assert MsgType(response).name.endswith("_RES")


def test_types_fit_in_the_u16_header_field() -> None:
    assert all(0 < m.value <= 0xFFFF for m in MsgType)


def test_error_codes_and_kick_reasons_are_their_own_names() -> None:
    # They travel as JSON strings: the value is the wire form.
    for enum in (ErrorCode, KickReason):
        for member in enum:
            assert member.value == member.name


def test_answers_are_below_the_notifications_and_pushes_above() -> None:
    """The Gateway frees a request's in-flight slot for every frame below
    FIRST_NOTIFICATION_TYPE it sends: a response type must never reach it, a push never
    stay below it."""
    answers = [*RESPONSE_TYPE.values(), MsgType.ERROR_RES]
    pushes = [m for m in MsgType if m.name.endswith("_NTF")]
    assert pushes and all(m >= FIRST_NOTIFICATION_TYPE for m in pushes)
    assert all(m < FIRST_NOTIFICATION_TYPE for m in answers)
    # Two header bytes, big-endian: the Gateway reads the low one when the high one is 0.
    assert FIRST_NOTIFICATION_TYPE < 256
