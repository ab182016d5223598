"""fake-compute as a real process with consoleauth, driven by the real `consolectl`."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

from console_common.net.bus import BusClient

from tests.integration._consoles import (
    consolectl,
    ctl_json,
    start_compute,
    start_consoleauth,
    wait_until,
)
from tests.support import VENV_BIN, free_port, remember_secret, wait_tcp

NOVNC_BASE = "http://127.0.0.1:6080/vnc_auto.html"
XVP_BASE = "http://172.24.1.1:6081/console"
TABLE = re.compile(
    r"\A\+-+\+-+\+\n\| Type +\| Url +\|\n\+-+\+-+\+\n\| (\w+) +\| (\S+) +\|\n\+-+\+-+\+\n\Z")


def test_get_vnc_console_novnc_table_and_token(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1,vm-2")
        with compute.proc:
            out = consolectl("get-vnc-console", "vm-1", "novnc", "--compute-url", compute.control)
            assert out.returncode == 0, out.stderr
            m = TABLE.match(out.stdout)
            assert m, out.stdout
            kind, url = m.groups()
            token = re.fullmatch(re.escape(NOVNC_BASE) + r"\?path=%3Ftoken%3D([A-Za-z0-9_\-]{43})"
                                 r"&token=([A-Za-z0-9_\-]{43})", url)
            assert kind == "novnc" and token and token.group(1) == token.group(2)
            info = ctl_json("--consoleauth-url", ep, "check", token.group(1))
            assert (info["host"], info["port"], info["console_type"]) == (
                "127.0.0.1", compute.vnc_base, "novnc")
            compute.proc.wait_for_log("console.authorized", instance="vm-1")


def test_get_vnc_console_xvpvnc_json_by_uuid(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1,vm-2", "--xvpvncproxy-base-url", XVP_BASE,
                                "--vncserver-proxyclient-address", "127.0.0.1")
        with compute.proc, BusClient([compute.control], timeout=3) as cc:
            listed = {i["name"]: i for i in cc.call("list_instances")["instances"]}
            assert sorted(listed) == ["vm-1", "vm-2"]
            vm2 = listed["vm-2"]
            assert (vm2["port"], vm2["kind"], vm2["password"]) == (compute.vnc_base + 1,
                                                                  "builtin", False)
            result = ctl_json("get-vnc-console", vm2["uuid"], "xvpvnc",
                              "--compute-url", compute.control)
            token = result["token"]
            assert result["access_url"] == f"{XVP_BASE}?token={token}"
            assert result["instance_uuid"] == vm2["uuid"] and result["port"] == vm2["port"]
            human = consolectl("get-vnc-console", "vm-2", "xvpvnc", "--compute-url",
                               compute.control)
            assert TABLE.match(human.stdout).group(1) == "xvpvnc"


def test_unknown_instance_and_unreachable_hosts(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1", builtin=1)
        with compute.proc:
            out = consolectl("get-vnc-console", "nope", "novnc", "--compute-url", compute.control)
            assert out.returncode == 1 and out.stdout == ""
            assert out.stderr.strip() == "consolectl: error: no instance 'nope' on this compute host"
            dead = f"tcp://127.0.0.1:{free_port()}"
            down = consolectl("get-vnc-console", "vm-1", "novnc", "--compute-url", dead,
                              "--consoleauth-timeout", "0.25")
            assert down.returncode == 3 and f"compute host unreachable: no reply from {dead}" \
                in down.stderr
            # Two hosts, the first does not know the server: the second one answers.
            other = start_compute(tmp_path, ep, "db-1", builtin=1)
            with other.proc:
                both = f"{other.control},{compute.control}"
                assert ctl_json("get-vnc-console", "vm-1", "novnc", "--compute-url",
                                both)["port"] == compute.vnc_base
                status = consolectl("status", "--consoleauth-url", ep, "--compute-url", both)
                assert status.returncode == 0, status.stderr
                assert status.stdout.count("fake-compute") == 2 and "consoleauth" in status.stdout
                assert "instances=1" in status.stdout and "store=memory" in status.stdout
    # consoleauth is gone: the compute host answers Unavailable, consolectl exits 3.
    lonely = start_compute(tmp_path, f"tcp://127.0.0.1:{free_port()}", "vm-1", builtin=1)
    with lonely.proc:
        out = consolectl("get-vnc-console", "vm-1", "novnc", "--compute-url", lonely.control)
        assert out.returncode == 3, out.stderr
        assert out.stderr.startswith(f"consolectl: error: compute host at {lonely.control} cannot "
                                     "serve the request: consoleauth unreachable: no reply from")
        status = consolectl("status", "--consoleauth-url", f"tcp://127.0.0.1:{free_port()}",
                            "--compute-url", lonely.control, "--consoleauth-timeout", "0.5")
        assert status.returncode == 3 and "unreachable" in status.stdout


def test_delete_instance_revokes_tokens_and_closes_console(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1,vm-2")
        with compute.proc, BusClient([compute.control], timeout=3) as cc:
            tokens = [remember_secret(cc.call("get_vnc_console", instance_id="vm-2",
                                              console_type=kind)["token"])
                      for kind in ("novnc", "xvpvnc")]
            port = compute.vnc_base + 1
            wait_tcp("127.0.0.1", port)
            viewer = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert viewer.recv(12) == b"RFB 003.008\n"
            assert cc.call("delete_instance", instance_id="vm-2") == {"deleted": 2}
            assert viewer.recv(100) == b""  # its open connection was closed
            viewer.close()
            for token in tokens:
                assert consolectl("check", token, "--consoleauth-url", ep).returncode == 1
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                raise AssertionError("the deleted instance's VNC port still accepts")
            except ConnectionRefusedError:
                pass
            gone = consolectl("get-vnc-console", "vm-2", "novnc", "--compute-url", compute.control)
            assert gone.returncode == 1
            assert [i["name"] for i in cc.call("list_instances")["instances"]] == ["vm-1"]
            compute.proc.wait_for_log("instance.deleted", instance="vm-2", tokens_revoked=2)
            compute.proc.wait_for_log("vnc.client_disconnected", instance="vm-2",
                                      reason="instance deleted")
            assert ctl_json("get-vnc-console", "vm-1", "novnc",
                            "--compute-url", compute.control)["port"] == compute.vnc_base


def test_external_instance_reports_its_vnc_server(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1,xvnc=vnc://192.0.2.7:5907", builtin=1)
        with compute.proc:
            result = ctl_json("get-vnc-console", "xvnc", "novnc", "--compute-url",
                              compute.control)
            assert (result["host"], result["port"]) == ("192.0.2.7", 5907)
            info = ctl_json("check", result["token"], "--consoleauth-url", ep)
            assert (info["host"], info["port"]) == ("192.0.2.7", 5907)


def test_bad_instances_spec_is_one_line_exit_2(tmp_path) -> None:
    secret = remember_secret("s3cr3t-pw")
    for spec, item in [("vm-1,bad name", "bad name"),
                       (f"vm-1;password={secret};colour=red", "vm-1;password=***;colour=red"),
                       ("x=vnc://h:99999", "x=vnc://h:99999")]:
        out = subprocess.run([str(VENV_BIN / "fake-compute"), "--instances", spec],
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"fake-compute: error: option instances: bad item {item!r} "
                                     "from flag --instances: ")
        assert secret not in out.stderr


def test_sigterm_stops_cleanly(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1", builtin=1)
        wait_tcp("127.0.0.1", compute.vnc_base)
        viewer = socket.create_connection(("127.0.0.1", compute.vnc_base), timeout=5)
        assert viewer.recv(12) == b"RFB 003.008\n"
        assert compute.proc.stop(signal.SIGTERM, timeout=15) == 0
        assert viewer.recv(100) == b""
        viewer.close()
        start = compute.proc.wait_for_log("service.start")
        assert (start["instances"][0]["name"], start["instances"][0]["password"]) == ("vm-1",
                                                                                   False)
        compute.proc.wait_for_log("service.stop")
        wait_until(lambda: not compute.proc.alive())


def test_get_vnc_console_all_one_row_per_instance_and_type(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1,vm-2,vm-3")
        with compute.proc, BusClient([compute.control], timeout=3) as cc:
            uuids = {i["name"]: i["uuid"] for i in cc.call("list_instances")["instances"]}
            out = consolectl("get-vnc-console", "--all", "--compute-url", compute.control)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert re.fullmatch(r"\| Name +\| ID +\| Type +\| Url +\|", lines[1])
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:-1]]
            assert [(r[0], r[1], r[2]) for r in rows] == [
                (vm, uuids[vm], kind) for vm in ("vm-1", "vm-2", "vm-3")
                for kind in ("novnc", "xvpvnc")]
            data = ctl_json("get-vnc-console", "--all", "novnc", "--compute-url", compute.control)
            assert [(d["name"], d["instance_uuid"], d["console_type"]) for d in data] == [
                (vm, uuids[vm], "novnc") for vm in ("vm-1", "vm-2", "vm-3")]
            for row in data:  # each URL carries a token consoleauth knows
                info = ctl_json("--consoleauth-url", ep, "check", row["token"])
                assert info["instance_uuid"] == row["instance_uuid"]
                assert row["access_url"].startswith(NOVNC_BASE)
            both = consolectl("get-vnc-console", "--all", "vm-1", "novnc",
                              "--compute-url", compute.control)
            assert both.returncode == 2 and "--all takes no SERVER" in both.stderr
