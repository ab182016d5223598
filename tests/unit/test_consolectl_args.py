"""consolectl: common options before or after the subcommand, usage errors exit 2."""

from __future__ import annotations

import sys

import pytest
from consoleauth.ctl.main import load_config, main, parse

EP = "tcp://10.0.0.9:6085"


@pytest.mark.parametrize("argv", [
    ["--consoleauth-url", EP, "--consoleauth-timeout", "0.5", "--json", "check", "T"],
    ["check", "T", "--consoleauth-url", EP, "--consoleauth-timeout", "0.5", "--json"],
    ["--consoleauth-url", EP, "check", "--json", "T", "--consoleauth-timeout", "0.5"],
    ["--consoleauth_url", EP, "check", "T", "--consoleauth_timeout=0.5", "--json"],
])
def test_common_options_anywhere(argv: list[str]) -> None:
    args, module, names = parse(argv)
    config = load_config(args, names)
    assert module.NAME == "check" and args.token == "T"
    assert config.consoleauth_url == (EP,)
    assert config.consoleauth_timeout == 0.5
    assert args.json is True


def test_after_wins_over_before_and_defaults_stay() -> None:
    args, _module, names = parse(["--consoleauth-url", EP, "revoke", "U",
                                  "--consoleauth-url", "tcp://10.0.0.8:6085"])
    config = load_config(args, names)
    assert config.consoleauth_url == ("tcp://10.0.0.8:6085",)
    assert config.compute_url == ("tcp://127.0.0.1:6095",)
    assert config.source_of("novncproxy_base_url") == "default"
    assert not getattr(args, "json", False)


def test_subcommand_arguments() -> None:
    args, module, _ = parse(["get-vnc-console", "vm-1", "xvpvnc", "--compute-url", EP])
    assert (module.NAME, args.server, args.console_type) == ("get-vnc-console", "vm-1", "xvpvnc")
    args, module, _ = parse(["authorize", "--host", "h", "--port", "5900", "--instance-uuid", "u"])
    assert (args.port, args.console_type, args.token) == (5900, "novnc", None)


@pytest.mark.parametrize("argv", [
    [], ["check"], ["bogus"], ["check", "T", "extra"], ["--bogus", "check", "T"],
    ["get-vnc-console", "vm-1", "spice"], ["authorize", "--host", "h", "--port", "x",
                                          "--instance-uuid", "u"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_option_value_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "T", "--consoleauth-url", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "consoleauth_url" in err and "nope" in err


def test_vnc_bridge_missing_from_the_build(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # A build without the module: importing it fails (None in sys.modules blocks the import).
    monkeypatch.setitem(sys.modules, "consoleauth.ctl.vnc_bridge", None)
    assert main(["vnc-bridge", "http://127.0.0.1:6081/console?token=x"]) == 2
    assert capsys.readouterr().err == "consolectl: error: vnc-bridge is not available in this build\n"


def test_vnc_bridge_arguments_come_from_its_module() -> None:
    pytest.importorskip("consoleauth.ctl.vnc_bridge")
    args, module, _ = parse(["--consoleauth-url", EP, "vnc-bridge", "--json", "URL"])
    assert module.__name__ == "consoleauth.ctl.vnc_bridge" and args.json is True
