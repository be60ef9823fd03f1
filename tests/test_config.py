"""Settings: flag beats environment beats default, and a bad value is one clear line.

An operator meets these errors first (a typo in a manifest), so the tests check the message
names the environment variable, and that the real entry points exit 2 with one stderr line
instead of a traceback. The entry-point tests run ``python -m gateway`` and ``python -m
gameserver`` as subprocesses, exactly as a container would.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gameserver.config import GameServerConfig
from gateway.config import GatewayConfig
from servicekit.config import ConfigError, describe, load_config, load_or_exit, setting
from tests.support.processes import REPO_ROOT, service_environment


@dataclass(frozen=True)
class SampleConfig:
    port: int = setting(5000, env="SAMPLE_PORT", help="a port", min=1, max=65535)
    ratio: float = setting(0.5, env="SAMPLE_RATIO", help="a ratio", min=0.0, max=1.0)
    enabled: bool = setting(False, env="SAMPLE_ENABLED", help="a switch")
    mode: str = setting("fast", env="SAMPLE_MODE", help="a choice", choices=("fast", "safe"))
    name: str = setting("", env="SAMPLE_NAME", help="free text")
    api_secret: str = setting("", env="SAMPLE_SECRET", help="masked in logs")


# The same settings with real type objects as annotations (this module's annotations are
# plain strings only when ``from __future__ import annotations`` is on, as it is here).
_TYPES: dict[str, type[Any]] = {"int": int, "float": float, "bool": bool, "str": str}
RuntimeTypedConfig = dataclasses.make_dataclass(
    "RuntimeTypedConfig",
    [(f.name, _TYPES[str(f.type)], dataclasses.field(default=f.default, metadata=f.metadata))
     for f in dataclasses.fields(SampleConfig)],
    frozen=True,
)


def load(argv: list[str] | None = None, env: dict[str, str] | None = None,
         config_type: type[Any] = SampleConfig) -> Any:
    return load_config(config_type, argv or [], env or {})


@pytest.fixture(params=[SampleConfig, RuntimeTypedConfig], ids=["str-annotations", "types"])
def config_type(request: pytest.FixtureRequest) -> type[Any]:
    return request.param  # type: ignore[no-any-return]


def test_defaults(config_type: type[Any]) -> None:
    config = load(config_type=config_type)
    assert (config.port, config.ratio, config.enabled, config.mode) == (5000, 0.5, False, "fast")


def test_environment_beats_default(config_type: type[Any]) -> None:
    config = load(env={"SAMPLE_PORT": "6000", "SAMPLE_RATIO": "0.25", "SAMPLE_ENABLED": "yes",
                       "SAMPLE_MODE": "safe", "SAMPLE_NAME": "x y"}, config_type=config_type)
    assert (config.port, config.ratio, config.enabled, config.mode, config.name) == (
        6000, 0.25, True, "safe", "x y")


def test_flag_beats_environment(config_type: type[Any]) -> None:
    config = load(["--port", "7000", "--mode=fast", "--enabled", "off"],
                  {"SAMPLE_PORT": "6000", "SAMPLE_MODE": "safe", "SAMPLE_ENABLED": "1"},
                  config_type=config_type)
    assert (config.port, config.mode, config.enabled) == (7000, "fast", False)


def test_flag_names_come_from_field_names() -> None:
    assert load(["--api-secret", "s"]).api_secret == "s"


def test_last_flag_wins() -> None:
    assert load(["--port", "1", "--port", "2"]).port == 2


def test_empty_string_setting_is_kept() -> None:
    assert load(env={"SAMPLE_NAME": ""}).name == ""


def test_whitespace_around_numbers_is_accepted() -> None:
    assert load(env={"SAMPLE_PORT": " 42 ", "SAMPLE_RATIO": " 1 "}).port == 42


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" on ", True),
    ("0", False), ("false", False), ("no", False), ("Off", False),
])
def test_booleans(raw: str, expected: bool) -> None:
    assert load(env={"SAMPLE_ENABLED": raw}).enabled is expected


@pytest.mark.parametrize("env, fragment", [
    ({"SAMPLE_PORT": "abc"}, "integer"),
    ({"SAMPLE_PORT": "5.5"}, "integer"),
    ({"SAMPLE_PORT": ""}, "integer"),
    ({"SAMPLE_PORT": "0"}, "at least"),
    ({"SAMPLE_PORT": "65536"}, "at most"),
    ({"SAMPLE_RATIO": "x"}, "number"),
    ({"SAMPLE_RATIO": "nan"}, "finite"),
    ({"SAMPLE_RATIO": "inf"}, "finite"),
    ({"SAMPLE_RATIO": "-0.1"}, "at least"),
    ({"SAMPLE_RATIO": "1.5"}, "at most"),
    ({"SAMPLE_ENABLED": "maybe"}, "true or false"),
    ({"SAMPLE_MODE": "turbo"}, "one of fast, safe"),
])
def test_bad_values_name_the_environment_variable(
    env: dict[str, str], fragment: str, config_type: type[Any]
) -> None:
    (variable,) = env
    with pytest.raises(ConfigError) as info:
        load(env=env, config_type=config_type)
    assert variable in str(info.value)
    assert fragment in str(info.value)


def test_bad_flag_value_also_names_the_environment_variable() -> None:
    with pytest.raises(ConfigError, match="SAMPLE_PORT"):
        load(["--port", "nope"])


def test_unknown_flag_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        load(["--no-such-flag", "1"])
    assert info.value.code == 2


def test_load_or_exit_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMPLE_PORT", "99999")
    with pytest.raises(SystemExit) as info:
        load_or_exit(SampleConfig, [], prog="sample", description="")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("sample: config error: SAMPLE_PORT")


def test_describe_masks_secrets() -> None:
    text = describe(load(env={"SAMPLE_SECRET": "hunter2"}))
    assert "hunter2" not in text
    assert "SAMPLE_SECRET=***" in text
    assert "SAMPLE_PORT=5000" in text
    assert "SAMPLE_SECRET=" in describe(load())
    assert "***" not in describe(load())


# --- the real services' settings -----------------------------------------------------------

SERVICES: dict[str, type[Any]] = {"gateway": GatewayConfig, "gameserver": GameServerConfig}


def env_names(config_type: type[Any]) -> list[str]:
    return [f.metadata["env"] for f in dataclasses.fields(config_type)]


@pytest.mark.parametrize("config_type", SERVICES.values(), ids=SERVICES.keys())
def test_service_defaults_load_and_validate(config_type: type[Any]) -> None:
    config = load_config(config_type, [], {})
    assert config.redis_connection == "redis-dev.k8s.home:6379"


@pytest.mark.parametrize("config_type", SERVICES.values(), ids=SERVICES.keys())
def test_every_service_setting_has_a_unique_env_and_help(config_type: type[Any]) -> None:
    names = env_names(config_type)
    assert len(names) == len(set(names))
    for field in dataclasses.fields(config_type):
        assert field.metadata["help"], field.name
        assert field.metadata["env"].isupper(), field.name


def test_gateway_flags_and_env() -> None:
    config = load_config(
        GatewayConfig, ["--client-port", "6000", "--redis-connection", "redis://r:1/2"],
        {"GATEWAY_CLIENT_PORT": "7000", "GATEWAY_NODE_ID": "3", "IDLE_TIMEOUT_S": "2.5"},
    )
    assert (config.client_port, config.node_id, config.idle_timeout_s) == (6000, 3, 2.5)
    assert config.redis_connection == "redis://r:1/2"


def test_gameserver_flags_and_env() -> None:
    config = load_config(
        GameServerConfig, ["--node-id", "9", "--mesh-port", "9200"],
        {"GAMESERVER_NODE_ID": "4", "RECONNECT_GRACE_S": "3", "AUTH_MODE": "hmac",
         "AUTH_SECRET": "s"},
    )
    assert (config.node_id, config.mesh_port, config.reconnect_grace_s) == ("9", 9200, 3.0)
    assert config.auth_mode == "hmac"


@pytest.mark.parametrize("value", ["auto", "ordinal", "1", "65535"])
def test_gameserver_node_id_forms(value: str) -> None:
    assert load_config(GameServerConfig, ["--node-id", value], {}).node_id == value


@pytest.mark.parametrize("value", ["0", "65536", "-1", "two", ""])
def test_gameserver_bad_node_id(value: str) -> None:
    with pytest.raises(ConfigError, match="GAMESERVER_NODE_ID"):
        load_config(GameServerConfig, ["--node-id", value], {})


@pytest.mark.parametrize("config_type, env, variable", [
    (GatewayConfig, {"REDIS_CONNECTION": "http://x"}, "REDIS_CONNECTION"),
    (GatewayConfig, {"GATEWAY_MAX_SEND_BUFFER_BYTES": "4096", "MAX_FRAME_BYTES": "65536"},
     "GATEWAY_MAX_SEND_BUFFER_BYTES"),
    (GatewayConfig, {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    (GatewayConfig, {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    (GatewayConfig, {"GATEWAY_NODE_ID": "0"}, "GATEWAY_NODE_ID"),
    (GatewayConfig, {"IDLE_TIMEOUT_S": "0"}, "IDLE_TIMEOUT_S"),
    (GameServerConfig, {"AUTH_MODE": "hmac"}, "AUTH_SECRET"),
    (GameServerConfig, {"AUTH_MODE": "oauth"}, "AUTH_MODE"),
    (GameServerConfig, {"NODE_HEARTBEAT_S": "5", "NODE_TTL_S": "5"}, "NODE_TTL_S"),
    (GameServerConfig, {"GAMESERVER_P2P_PORT": "9101"}, "GAMESERVER_MESH_PORT"),
    (GameServerConfig, {"GAMESERVER_P2P_PORT": "0"}, "GAMESERVER_P2P_PORT"),
    (GameServerConfig, {"RECONNECT_GRACE_S": "soon"}, "RECONNECT_GRACE_S"),
])
def test_service_validation_names_the_variable(
    config_type: type[Any], env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config(config_type, [], env)


# --- the real entry points, as subprocesses ------------------------------------------------


def run_module(module: str, args: list[str], env: dict[str, str | None] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=service_environment(env), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("module", SERVICES.keys())
def test_help_lists_every_environment_variable(module: str) -> None:
    result = run_module(module, ["--help"])
    assert result.returncode == 0, result.stderr
    missing = [name for name in env_names(SERVICES[module]) if name not in result.stdout]
    assert not missing, f"--help of {module} does not mention {missing}"


BAD_ENV = {
    "gateway": [
        ("GATEWAY_CLIENT_PORT", "abc"),
        ("GATEWAY_CLIENT_PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("REDIS_CONNECTION", "ftp://nowhere"),
        ("IDLE_TIMEOUT_S", "-1"),
        ("REDIS_TLS_CERT_FILE", "/etc/redis-tls/tls.crt"),
        ("GATEWAY_WS_ALLOWED_ORIGINS", "https://game.example.com,game.example.com"),
    ],
    "gameserver": [
        ("GAMESERVER_P2P_PORT", "abc"),
        ("GAMESERVER_NODE_ID", "0"),
        ("AUTH_MODE", "sometimes"),
        ("REDIS_CONNECTION", "redis-host:port"),
        ("RECONNECT_GRACE_S", "nan"),
        ("REDIS_TLS_CA_FILE", "/etc/redis-tls/ca.crt"),
    ],
}


@pytest.mark.parametrize(
    "module, variable, value",
    [(module, var, value) for module, cases in BAD_ENV.items() for var, value in cases],
)
def test_bad_environment_value_exits_2_with_one_line(module: str, variable: str, value: str
                                                      ) -> None:
    result = run_module(module, [], {variable: value})
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", SERVICES.keys())
def test_bad_flag_value_exits_2_naming_the_variable(module: str) -> None:
    result = run_module(module, ["--metrics-port", "eighty"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert SERVICES[module].__dataclass_fields__["metrics_port"].metadata["env"] in lines[0]


def test_describe_masks_passwords_in_redis_urls() -> None:
    from gameserver.config import GameServerConfig
    from servicekit.config import describe

    config = GameServerConfig(redis_connection="redis://user:s3cr3t@redis.example:6380/2",
                              auth_mode="hmac", auth_secret="hush")
    line = describe(config)
    assert "s3cr3t" not in line and "hush" not in line
    assert "REDIS_CONNECTION=redis://user:***@redis.example:6380/2" in line
    assert "AUTH_SECRET=***" in line


def test_describe_masks_the_password_of_tls_and_password_only_urls() -> None:
    for url, shown in (("rediss://gb:pw-7f3a@redis.example:6380/1",
                        "rediss://gb:***@redis.example:6380/1"),
                       ("redis://:pw-7f3a@redis.example/0", "redis://:***@redis.example/0")):
        line = describe(GatewayConfig(redis_connection=url))
        assert "pw-7f3a" not in line and f"REDIS_CONNECTION={shown}" in line


@pytest.mark.parametrize("module", SERVICES.keys())
def test_help_never_shows_the_redis_password(module: str) -> None:
    result = run_module(module, ["--help"], {"REDIS_CONNECTION": "redis://u:pw-9c1d@h:1/0"})
    assert result.returncode == 0, result.stderr
    assert "pw-9c1d" not in result.stdout + result.stderr
    for name in ("REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"):
        assert name in result.stdout


def test_a_bad_redis_url_is_one_line_without_its_password() -> None:
    result = run_module("gameserver", [], {"REDIS_CONNECTION": "redis://u:pw-9c1d@h:99999/0"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("gameserver: config error: REDIS_CONNECTION has an invalid "
                                     "port: 'redis://u:***@h:99999/0'")


# --- Redis over TLS: REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE ----------------


@dataclass(frozen=True)
class Pem:
    ca: Path
    cert: Path
    key: Path
    other_key: Path
    encrypted_key: Path
    garbage: Path


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    import trustme
    from cryptography.hazmat.primitives import serialization

    directory = tmp_path_factory.mktemp("redis-pem")
    ca = trustme.CA()
    files = Pem(*(directory / name for name in ("ca.pem", "client.crt", "client.key",
                                                "other.key", "encrypted.key", "garbage.pem")))
    ca.cert_pem.write_to_path(str(files.ca))
    issued = ca.issue_cert("gb-client")
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    ca.issue_cert("someone-else").private_key_pem.write_to_path(str(files.other_key))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    files.encrypted_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2")))
    files.garbage.write_text("-----BEGIN CERTIFICATE-----\nnot-a-cert-secret-words\n"
                             "-----END CERTIFICATE-----\n")
    return files


TLS_URL = "rediss://gb:pw@redis.example:6380/0"


def tls_env(ca: Path | str = "", cert: Path | str = "", key: Path | str = "",
            connection: str = TLS_URL) -> dict[str, str]:
    return {"REDIS_CONNECTION": connection, "REDIS_TLS_CA_FILE": str(ca),
            "REDIS_TLS_CERT_FILE": str(cert), "REDIS_TLS_KEY_FILE": str(key)}


@pytest.mark.parametrize("config_type", SERVICES.values(), ids=SERVICES.keys())
def test_redis_tls_files_load_and_become_redis_py_arguments(config_type: type[Any],
                                                            pem: Pem) -> None:
    config = load_config(config_type, [], tls_env(pem.ca, pem.cert, pem.key))
    assert config.redis_tls.client_kwargs(TLS_URL) == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": str(pem.ca),
        "ssl_certfile": str(pem.cert), "ssl_keyfile": str(pem.key)}
    line = describe(config)
    assert f"REDIS_TLS_CA_FILE={pem.ca}" in line and f"REDIS_TLS_KEY_FILE={pem.key}" in line
    assert "REDIS_CONNECTION=rediss://gb:***@redis.example:6380/0" in line
    # No CA file: the system's CAs, still verified, host name included.
    plain = load_config(config_type, [], {"REDIS_CONNECTION": TLS_URL})
    assert plain.redis_tls.client_kwargs(TLS_URL) == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": None}
    assert plain.redis_tls.client_kwargs("redis://h:1/0") == {}


def test_a_client_certificate_needs_its_key_and_the_key_its_certificate(pem: Pem) -> None:
    for env in (tls_env(pem.ca, cert=pem.cert), tls_env(pem.ca, key=pem.key)):
        with pytest.raises(ConfigError, match="REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go "
                                              "together"):
            load_config(GatewayConfig, [], env)


@pytest.mark.parametrize("connection", ["redis://h:6379/0", "h:6379", "unix:///run/r.sock"])
def test_tls_files_without_rediss_name_both_variables(pem: Pem, connection: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(GameServerConfig, [], tls_env(pem.ca, connection=connection))
    message = str(info.value)
    assert "REDIS_TLS_CA_FILE" in message and "REDIS_CONNECTION" in message
    assert "rediss://" in message


def test_a_missing_or_unreadable_file_names_the_variable_and_the_path(
    pem: Pem, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    for env, variable, path in ((tls_env(missing), "REDIS_TLS_CA_FILE", missing),
                                (tls_env(pem.ca, tmp_path, pem.key), "REDIS_TLS_CERT_FILE",
                                 tmp_path)):
        with pytest.raises(ConfigError) as info:
            load_config(GatewayConfig, [], env)
        assert str(info.value).startswith(f"{variable} {path}: "), info.value


@pytest.mark.parametrize("field, variables", [
    ("garbage_ca", ("REDIS_TLS_CA_FILE",)),
    ("other_key", ("REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE")),
    ("encrypted_key", ("REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE")),
])
def test_unusable_pem_files_are_config_errors_that_never_quote_them(
    pem: Pem, field: str, variables: tuple[str, ...]
) -> None:
    env = {
        "garbage_ca": tls_env(pem.garbage),
        "other_key": tls_env(pem.ca, pem.cert, pem.other_key),
        "encrypted_key": tls_env(pem.ca, pem.cert, pem.encrypted_key),  # fails, never prompts
    }[field]
    with pytest.raises(ConfigError) as info:
        load_config(GameServerConfig, [], env)
    message = str(info.value)
    assert all(variable in message for variable in variables), message
    assert "secret-words" not in message and "BEGIN" not in message


def test_the_admin_cli_checks_the_tls_files_too(pem: Pem) -> None:
    result = run_module("gameserver", ["admin", "kick", "--user-id", "1", "--redis-connection",
                                       "redis://h:1/0", "--redis-tls-ca-file", str(pem.ca)])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "REDIS_TLS_CA_FILE" in lines[0] and "Traceback" not in lines[0]
