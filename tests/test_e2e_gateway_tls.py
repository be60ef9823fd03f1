"""TLS on the Gateway with real processes and real certificates (a throwaway CA from
``trustme``): sessions over TLS beside the plaintext port, clients that cannot do TLS 1.2
turned away without disturbing anybody, stalled handshakes timed out, SIGHUP reloading the
certificate for new connections only, and a reload that fails keeping the old one."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import trustme
from websockets.exceptions import InvalidMessage

from gateway.config import GatewayConfig
from protocol import MsgType
from protocol.frame import FrameSplitter, read_header
from protocol.payload import decode_payload, encode_message
from servicekit.config import ConfigError
from test_client import GameClient
from test_client.tls import TlsOptions
from tests.support.cli import run_cli
from tests.support.cluster import Cluster
from tests.support.ports import free_port
from tests.support.raw import RawClient
from tests.support.raw_ws import WsRawClient
from tests.support.users import new_user_id
from tests.support.waiting import wait_until, wait_until_async

IDLE_TIMEOUT_S = 2.0


@dataclass
class Certificates:
    ca: trustme.CA
    cert_file: Path
    key_file: Path
    #: The CA's certificate, what a client is told to trust (--tls-ca).
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def issue(self, common_name: str) -> None:
        """A new certificate for localhost written over the files (what cert-manager does)."""
        cert = self.ca.issue_cert("localhost", "127.0.0.1", common_name=common_name)
        cert.cert_chain_pems[0].write_to_path(str(self.cert_file))
        cert.private_key_pem.write_to_path(str(self.key_file))


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    certs = Certificates(trustme.CA(), tmp_path / "tls.crt", tmp_path / "tls.key",
                         tmp_path / "ca.pem")
    certs.ca.cert_pem.write_to_path(str(certs.ca_file))
    certs.issue("first")
    return certs


@pytest.fixture
def tls_cluster(system_factory, certificates: Certificates) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    tls_port = free_port()
    cluster: Cluster = system_factory(env={
        "GATEWAY_TLS_CERT_FILE": str(certificates.cert_file),
        "GATEWAY_TLS_KEY_FILE": str(certificates.key_file),
        "GATEWAY_TLS_PORT": str(tls_port),
        "IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
        "CLIENT_RATE_LIMIT": "0",  # the bench below plays flat out
    })
    cluster.tls_port = tls_port  # type: ignore[attr-defined]
    yield cluster


def tls_address(cluster: Cluster) -> tuple[str, int]:
    return cluster.gateway_host, cluster.tls_port  # type: ignore[attr-defined]


def failures(cluster: Cluster, reason: str | None = None) -> float:
    """Failed handshakes on the TLS port, of one reason or of all."""
    reasons = [reason] if reason else ["not_tls", "protocol_version", "tls_error", "timeout",
                                       "closed"]
    return sum(cluster.gateway.process.metric(
        f'gateway_tls_handshake_failures_total{{reason="{r}"}}') for r in reasons)


async def peer_common_name(cluster: Cluster, certificates: Certificates) -> str:
    client = await RawClient.connect(tls_address(cluster), certificates.client_context())
    cert = client.writer.get_extra_info("peercert")
    await client.close()
    return dict(pair[0] for pair in cert["subject"])["commonName"]


async def test_a_session_over_tls_beside_the_plaintext_port(
    tls_cluster: Cluster, certificates: Certificates
) -> None:
    client = await RawClient.connect(tls_address(tls_cluster), certificates.client_context())
    assert client.writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    await client.login(new_user_id())
    echo = await client.request(MsgType.ECHO_REQ, 2, {"over": "tls"})
    assert echo.payload == {"over": "tls"}
    plain = await RawClient.connect(tls_cluster.gateway_address)
    await plain.login(new_user_id())
    assert (await plain.request(MsgType.ECHO_REQ, 2, {"over": "tcp"})).payload == {"over": "tcp"}
    await asyncio.gather(client.close(), plain.close())
    assert tls_cluster.gateway.process.metric("gateway_tls_handshakes_total") >= 1


async def test_a_session_resumes_across_the_tls_and_plaintext_ports(
    tls_cluster: Cluster, certificates: Certificates
) -> None:
    secure = await RawClient.connect(tls_address(tls_cluster), certificates.client_context())
    login = await secure.login(new_user_id())
    moved = await secure.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})
    secure.writer.transport.abort()
    plain = await RawClient.connect(tls_cluster.gateway_address)
    resumed = await plain.request(MsgType.RECONNECT_REQ, 3, {
        "session_id": login.payload["session_id"],
        "reconnect_key": login.payload["reconnect_key"]})
    assert resumed.payload["ok"] and resumed.payload["state"]["moves"] == 1, resumed
    again = await RawClient.connect(tls_address(tls_cluster), certificates.client_context())
    back = await again.request(MsgType.RECONNECT_REQ, 4, {
        "session_id": login.payload["session_id"],
        "reconnect_key": resumed.payload["reconnect_key"]})
    assert back.payload["ok"], back
    assert (await again.request(MsgType.MOVE_REQ, 2, {"x": 1, "y": 1})).raw == moved.raw
    await asyncio.gather(plain.close(), again.close())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_plaintext_and_old_tls_on_the_tls_port_are_closed_and_counted(
    tls_cluster: Cluster, certificates: Certificates
) -> None:
    """Neither gets a byte of the protocol, each is counted by its reason, and a TLS
    client beside them keeps being served."""
    bystander = await RawClient.connect(tls_address(tls_cluster),
                                        certificates.client_context())
    await bystander.login(new_user_id())

    plain = await RawClient.connect(tls_address(tls_cluster))
    await plain.send_msg(MsgType.LOGIN_REQ, 1, {"user_id": new_user_id()})
    assert await plain.wait_closed(timeout=IDLE_TIMEOUT_S / 2) == []  # at once, not by timeout
    wait_until(lambda: failures(tls_cluster, "not_tls") == 1, timeout=10,
               message="plaintext client on the TLS port not counted")

    old = certificates.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await RawClient.connect(tls_address(tls_cluster), old)
    wait_until(lambda: failures(tls_cluster, "protocol_version") == 1, timeout=10,
               message="TLS 1.1 client not counted")
    # Only the bystander became a client connection: a refused handshake never does.
    metric = tls_cluster.gateway.process.metric
    assert metric('gateway_connections_total{transport="tls"}') == 1
    assert metric('gateway_connections_total{transport="tcp"}') == 0

    echo = await bystander.request(MsgType.ECHO_REQ, 2, {"still": "served"})
    assert echo.payload == {"still": "served"}
    await bystander.close()


async def test_a_stalled_handshake_is_closed_by_the_idle_timeout(tls_cluster: Cluster) -> None:
    stalled = socket.create_connection(tls_address(tls_cluster))
    stalled.settimeout(10 * IDLE_TIMEOUT_S)
    try:
        assert stalled.recv(1024) == b""  # closed by the Gateway, nothing sent
    except ConnectionResetError:
        pass
    finally:
        stalled.close()
    wait_until(lambda: failures(tls_cluster, "timeout") >= 1, timeout=10 * IDLE_TIMEOUT_S,
               message="stalled handshake not counted")


async def test_sighup_reloads_the_certificate_for_new_connections(
    tls_cluster: Cluster, certificates: Certificates
) -> None:
    gateway = tls_cluster.gateway.process
    before = await RawClient.connect(tls_address(tls_cluster), certificates.client_context())
    await before.login(new_user_id())
    assert await peer_common_name(tls_cluster, certificates) == "first"

    certificates.issue("second")
    since = gateway.log_offset()
    gateway.send_signal(signal.SIGHUP)
    gateway.wait_for_log("TLS certificate reloaded", timeout=10, since=since)
    assert await peer_common_name(tls_cluster, certificates) == "second"
    # The connection made before the reload is untouched.
    assert (await before.request(MsgType.ECHO_REQ, 2, {"a": 1})).payload == {"a": 1}

    certificates.key_file.write_text("not a key")
    since = gateway.log_offset()
    gateway.send_signal(signal.SIGHUP)
    gateway.wait_for_log("TLS certificate reload failed, keeping the current certificate",
                         timeout=10, since=since)
    assert await peer_common_name(tls_cluster, certificates) == "second"
    assert gateway.running
    await before.close()


def test_tls_settings_are_checked_together() -> None:
    with pytest.raises(ConfigError, match="set both or neither"):
        GatewayConfig(tls_cert_file="/x.crt").validate()
    with pytest.raises(ConfigError, match="GATEWAY_PLAINTEXT=false needs"):
        GatewayConfig(plaintext=False).validate()
    GatewayConfig(tls_cert_file="/x.crt", tls_key_file="/x.key", plaintext=False).validate()


# ----------------------------------------------------------------- the test client over TLS
def tls_flags(cluster: Cluster, certificates: Certificates) -> list[str]:
    host, port = tls_address(cluster)
    return ["--host", host, "--port", str(port), "--tls-ca", str(certificates.ca_file),
            "--tls-server-name", "localhost"]


def test_the_scripted_client_over_tls(tls_cluster: Cluster, certificates: Certificates) -> None:
    done = run_cli(*tls_flags(tls_cluster, certificates), "--user-id",
                           str(new_user_id()), "--run", "echo hi; move 1 2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok login") and lines[1] == 'ok echo {"text":"hi"}', lines
    assert lines[2].startswith("ok move") and '"moves":1' in lines[2], lines


def test_the_client_refuses_a_server_it_cannot_verify(tls_cluster: Cluster) -> None:
    host, port = tls_address(tls_cluster)
    done = run_cli("--host", host, "--port", str(port), "--tls", "--user-id", "5",
                           "--run", "echo hi")
    assert done.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_bench_over_tls(tls_cluster: Cluster, certificates: Certificates) -> None:
    done = run_cli("bench", *tls_flags(tls_cluster, certificates), "--connections", "4",
                           "--duration", "1", "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert report["connections"] == 4 and report["connect_errors"] == 0, report
    assert report["messages"] > 0 and report["errors"] == 0, report


async def test_the_client_library_resumes_over_tls(
    tls_cluster: Cluster, certificates: Certificates
) -> None:
    """The idle timeout (2 s here) kicks the client; it resumes over TLS by itself."""
    client = GameClient(*tls_address(tls_cluster), tls=TlsOptions(
        ca_file=str(certificates.ca_file), server_name="localhost"))
    await client.connect()
    await client.login(new_user_id())
    assert (await client.move(1, 1))["moves"] == 1
    await wait_until_async(lambda: client.reconnect_count >= 1, timeout=10 * IDLE_TIMEOUT_S,
                           message="the client did not resume after its idle kick")
    assert (await client.move(2, 2))["moves"] == 2
    await client.close()


def test_a_certificate_that_cannot_be_loaded_stops_the_start_with_one_line(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_TLS_CERT_FILE=str(tmp_path / "missing.crt"),
               GATEWAY_TLS_KEY_FILE=str(tmp_path / "missing.key"),
               GATEWAY_CLIENT_PORT=str(free_port()), GATEWAY_METRICS_PORT=str(free_port()),
               GATEWAY_TLS_PORT=str(free_port()), GATEWAY_CLIENT_HOST="127.0.0.1",
               GATEWAY_METRICS_HOST="127.0.0.1", REDIS_CONNECTION=f"127.0.0.1:{free_port()}")
    done = subprocess.run([sys.executable, "-m", "gateway"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    output = done.stdout + done.stderr
    assert "Cannot load the TLS certificate and key" in output
    assert "Traceback" not in output


async def test_sighup_without_tls_does_not_stop_the_gateway(system_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = system_factory()
    gateway = cluster.gateway.process
    since = gateway.log_offset()
    gateway.send_signal(signal.SIGHUP)
    gateway.wait_for_log("SIGHUP received: no TLS certificate to reload", timeout=10,
                         since=since)
    assert gateway.running and gateway.readyz_status() == 200


def tls_socket(cluster: Cluster, certificates: Certificates) -> ssl.SSLSocket:
    raw = socket.create_connection(tls_address(cluster), timeout=10)
    return certificates.client_context().wrap_socket(raw, server_hostname="localhost")


def blocking_login(sock: ssl.SSLSocket, user_id: int) -> dict[str, object]:
    """LOGIN over a blocking TLS socket; returns LOGIN_RES's payload."""
    sock.sendall(encode_message(MsgType.LOGIN_REQ, 1, {"user_id": user_id}))
    splitter = FrameSplitter(65536)
    while True:
        data = sock.recv(65536)
        assert data, "closed before LOGIN_RES"
        for frame in splitter.feed(data):
            header = read_header(frame)
            if header.msg_type == MsgType.LOGIN_RES:
                payload: dict[str, object] = decode_payload(frame, header.flags)
                return payload


async def test_after_the_handshake_close_notify_and_garbage_close_only_that_connection(
    tls_cluster: Cluster, certificates: Certificates
) -> None:
    """A client's close_notify is an orderly end (the Gateway answers with its own, and the
    session waits for a resume); bytes that are not a valid record end that connection at
    once. A TLS client beside them keeps being served."""
    bystander = await RawClient.connect(tls_address(tls_cluster),
                                        certificates.client_context())
    await bystander.login(new_user_id())

    def close_notify() -> dict[str, object]:
        sock = tls_socket(tls_cluster, certificates)
        login = blocking_login(sock, new_user_id())
        raw = sock.unwrap()  # ours, then waits for the Gateway's close_notify
        try:
            assert raw.recv(1) == b""  # then the Gateway closed the TCP connection
        finally:
            raw.close()
        return login

    def garbage() -> None:
        sock = tls_socket(tls_cluster, certificates)
        blocking_login(sock, new_user_id())
        # An application-data record that does not decrypt, under the TLS layer's feet.
        with socket.socket(fileno=os.dup(sock.fileno())) as raw:
            raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        try:
            assert sock.recv(1024) == b""
        except (ssl.SSLError, ConnectionError):
            pass  # closed: what matters is that it is, and that nobody else noticed
        finally:
            sock.close()

    login = await asyncio.to_thread(close_notify)
    await asyncio.to_thread(garbage)

    resumer = await RawClient.connect(tls_cluster.gateway_address)  # the plaintext port
    res = await resumer.request(MsgType.RECONNECT_REQ, 0, {
        "session_id": login["session_id"], "reconnect_key": login["reconnect_key"]})
    assert res.payload["ok"] is True, res.payload
    await resumer.close()
    echo = await bystander.request(MsgType.ECHO_REQ, 2, {"still": "served"})
    assert echo.payload == {"still": "served"}
    await bystander.close()
    assert failures(tls_cluster) == 0  # none of this was a failed handshake


async def test_websocket_over_tls_on_the_wss_port(tls_cluster: Cluster,
                                                  certificates: Certificates) -> None:
    """GATEWAY_WSS_PORT: wss:// with the Gateway's certificate (the same as the TLS port's);
    the session protocol on top is the same."""
    url = f"wss://localhost:{tls_cluster.gateway.wss_port}/"
    client = await WsRawClient.connect(url, ssl=certificates.client_context())
    await client.login(new_user_id())
    echo = await client.request(MsgType.ECHO_REQ, 2, {"over": "wss"})
    assert echo.payload == {"over": "wss"}
    await client.close()
    # And no plaintext WebSocket on it.
    with pytest.raises((InvalidMessage, OSError)):
        await WsRawClient.connect(url.replace("wss://", "ws://"))
