"""Config: precedence, the seed's flag file, INI, errors that name option/source/value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from console_common.runtime.config import ConfigError, load, parse, select
from console_common.runtime.config.loader import flags_from_namespace, make_parser

SEED_FLAGFILE = """\
# /etc/nova/nova.conf from the Essex VNC proxy guide
--novncproxy_base_url=http://172.24.1.1:6080/vnc_auto.html
--xvpvncproxy_base_url=http://172.24.1.1:6081/console
--vncserver_proxyclient_address=192.168.1.2
--vncserver_listen=192.168.1.2
--sql_connection=mysql://nova:pw@172.24.1.1/nova
novncproxy_port=6080
--ssl_only
--nofake_option
"""

NAMES = ["novncproxy_base_url", "xvpvncproxy_base_url", "vncserver_listen",
         "vncserver_proxyclient_address", "novncproxy_port", "ssl_only", "console_token_ttl",
         "consoleauth_url", "console_allowed_origins", "log_format"]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_novas():
    c = load(select(NAMES), environ={})
    assert c.novncproxy_port == 6080
    assert c.console_token_ttl == 600
    assert c.consoleauth_url == ("tcp://127.0.0.1:6085",)
    assert c.ssl_only is False
    assert c.source_of("novncproxy_port") == "default"


def test_seed_flagfile_parses(tmp_path):
    path = write(tmp_path, "nova.conf", SEED_FLAGFILE)
    c = load(select(NAMES), [path], environ={})
    assert c.novncproxy_base_url == "http://172.24.1.1:6080/vnc_auto.html"
    assert c.xvpvncproxy_base_url == "http://172.24.1.1:6081/console"
    assert c.vncserver_listen == "192.168.1.2"
    assert c.ssl_only is True
    assert c.source_of("vncserver_listen") == f"{path}:5"
    # options of other Nova services are reported, not silently ignored
    assert any("sql_connection" in n and f"{path}:6" in n for n in c.notes)


def test_ini_sections_and_new_nova_names(tmp_path):
    path = write(tmp_path, "nova.conf", "[DEFAULT]\nnovncproxy_port = 7000\n"
                 "[vnc]\nserver_listen = 10.0.0.5\n[console]\nallowed_origins = a.example, B.example\n"
                 "[database]\nconnection = x\n")
    c = load(select(NAMES), [path], environ={})
    assert c.novncproxy_port == 7000
    assert c.vncserver_listen == "10.0.0.5"
    assert c.console_allowed_origins == ("a.example", "b.example")


def test_precedence_defaults_files_env_flags(tmp_path):
    first = write(tmp_path, "a.conf", "--novncproxy_port=7001\n--console_token_ttl=30\n")
    second = write(tmp_path, "b.conf", "--novncproxy_port=7002\n")
    env = {"CONSOLE_NOVNCPROXY_PORT": "7003", "CONSOLE_LOG_FORMAT": "json"}
    c = load(select(NAMES), [first, second], environ=env)
    assert (c.novncproxy_port, c.console_token_ttl, c.log_format) == (7003, 30, "json")
    assert c.source_of("console_token_ttl") == f"{first}:2"
    parser = make_parser("t", "t", select(NAMES))
    ns = parser.parse_args(["--novncproxy-port", "7004", "--config-file", first])
    c = load(select(NAMES), ns.config_file, environ=env, flags=flags_from_namespace(ns, select(NAMES)))
    assert c.novncproxy_port == 7004
    assert c.source_of("novncproxy_port") == "flag --novncproxy-port"


def test_underscore_flag_spelling_and_bool_flag():
    parser = make_parser("t", "t", select(NAMES))
    ns = parser.parse_args(["--novncproxy_port", "7005", "--ssl-only"])
    c = load(select(NAMES), environ={}, flags=flags_from_namespace(ns, select(NAMES)))
    assert c.novncproxy_port == 7005 and c.ssl_only is True


@pytest.mark.parametrize(("env", "needle"), [
    ({"CONSOLE_NOVNCPROXY_PORT": "70000"}, "option novncproxy_port: bad value '70000' from env "
     "CONSOLE_NOVNCPROXY_PORT: expected a port number 1-65535"),
    ({"CONSOLE_CONSOLE_TOKEN_TTL": "soon"}, "option console_token_ttl: bad value 'soon'"),
    ({"CONSOLE_CONSOLEAUTH_URL": "http://x"}, "expected ZeroMQ endpoints"),
    ({"CONSOLE_LOG_FORMAT": "xml"}, "expected auto, json or console"),
    ({"CONSOLE_NOVNCPROXY_BASE_URL": "ftp://x/"}, "expected an http:// or https:// URL"),
    ({"CONSOLE_SSL_ONLY": "maybe"}, "expected true or false"),
])
def test_bad_values_name_option_source_value_expectation(env, needle):
    with pytest.raises(ConfigError) as err:
        load(select(NAMES), environ=env)
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_bad_value_in_file_names_file_and_line(tmp_path):
    path = write(tmp_path, "x.conf", "# comment\n\n--novncproxy_port=http\n")
    with pytest.raises(ConfigError, match=rf"from {path}:3: expected a whole number"):
        load(select(NAMES), [path], environ={})


def test_missing_file_and_bad_ini(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(select(NAMES), [str(tmp_path / "none.conf")], environ={})
    path = write(tmp_path, "bad.conf", "[DEFAULT]\njust words\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: expected 'name = value'"):
        load(select(NAMES), [path], environ={})


def test_unknown_env_reported():
    c = load(select(NAMES), environ={"CONSOLE_NOVNC_PORT": "1"})
    assert any("CONSOLE_NOVNC_PORT" in n for n in c.notes)


def test_config_is_frozen():
    c = load(select(NAMES), environ={})
    with pytest.raises(AttributeError):
        c.novncproxy_port = 1


def test_parse_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse("novncproxy", "d", NAMES, ["--novncproxy-port", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("novncproxy: error: option novncproxy_port: bad value '0' from flag "
                   "--novncproxy-port: expected a port number 1-65535")


@pytest.mark.parametrize("command", ["consoleauth"])
def test_help_lists_every_option_with_default(command):
    out = subprocess.run([sys.executable, "-m", f"{command}.cli", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for flag in ("--consoleauth-listen", "--console-token-ttl", "--token-store", "--config-file"):
        assert flag in out
    assert "[default: 600]" in out
    version = subprocess.run([sys.executable, "-m", f"{command}.cli", "--version"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert version.strip().startswith(command)
