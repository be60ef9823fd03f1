"""A fake of what the Gateway's connection protocols use of an asyncio transport, recorded:
for in-process tests of the relay (tests/test_gateway_relay.py) and of the layers between a
client connection and TCP (tests/test_gateway_ws_connection.py)."""

from __future__ import annotations

from typing import Any

#: The peer address a fake transport reports.
PEER = ("203.0.113.7", 40000)


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        #: What get_write_buffer_size() reports (tests set it to fake a slow reader).
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written += data

    def take(self) -> bytes:
        """Everything written since the last take()."""
        data, self.written = bytes(self.written), bytearray()
        return data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default
