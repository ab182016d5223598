"""`consolectl logs` over logs the real services wrote: consoleauth, novncproxy,
xvpvncproxy and a fake compute host as processes, sessions and refusals driven by hand,
then every subcommand run (as the real command) on their log files, a .gz copy, the
directory, and the same lines as `docker compose logs` prints them, piped to stdin.
The numbers must be what the test drove."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from console_common.net.bus import BusClient

from tests.integration._consoles import start_compute
from tests.integration.test_live_control import WAIT, Cluster
from tests.integration.test_novnc_protocol import WsClient
from tests.integration.test_xvp_protocol import read_exactly
from tests.support import VENV_BIN, ServiceProcess, remember_secret


def logs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(VENV_BIN / "consolectl"), "logs", *args], input=stdin,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result


def logs_json(*args: str, stdin: str | None = None) -> object:
    return json.loads(logs(*args, "--json", stdin=stdin).stdout)


def test_logs_of_real_services(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    cluster = Cluster(log_dir)
    try:
        novnc, xvp = cluster.start_proxies(novnc=1, xvp=1)
        compute = start_compute(log_dir, cluster.bus, "vm-1", builtin=1)
        cluster.procs.append(compute.proc)
        # a session to the fake host's real RFB server, by its own get_vnc_console
        with BusClient([compute.control], timeout=5) as cc:
            token = remember_secret(cc.call("get_vnc_console", instance_id="vm-1",
                                            console_type="novnc")["token"])
        rfb = WsClient(novnc.port, f"/websockify?token={token}")
        assert rfb.reply.status == 101
        assert rfb.recv_bytes(12) == b"RFB 003.008\n"
        rfb.close()
        # echo sessions with known payloads: 2 on novncproxy, 2 on xvpvncproxy
        a = cluster.open(novnc, "vm-a")  # "hello vm-a": 10 bytes each way
        b = cluster.open(novnc, "vm-a")
        assert b.echoes(b"x" * 90)  # 100 bytes each way in all
        c = cluster.open(xvp, "vm-b")
        held = cluster.open(xvp, "vm-b")  # left open: its proxy is SIGKILLed below
        for conn in (a, b, c):
            conn.shut()
        # refusals: two bad tokens on novncproxy (403), one on xvp (401), and a probe
        for _ in range(2):
            refused = WsClient(novnc.port, "/websockify?token=nope")
            refused.close()
            assert refused.reply.status == 403
        with socket.create_connection(("127.0.0.1", xvp.port), timeout=WAIT) as sock:
            sock.sendall(b"CONNECT /console?token=nope HTTP/1.0\r\n\r\n")
            assert read_exactly(sock, 12).startswith(b"HTTP/1.1 401")
        socket.create_connection(("127.0.0.1", xvp.port), timeout=WAIT).close()  # a probe
        for proxy, ended in ((novnc, 3), (xvp, 1)):
            wait_ends(proxy.proc, ended)
        xvp.proc.wait_for_log("xvp.closed", timeout=WAIT)
        xvp.proc.stop(signal.SIGKILL)  # its open session never logs an end
        held.shut()
    finally:
        cluster.close()

    summary = logs_json("summary", str(log_dir))
    assert summary["sessions_started"] == 5
    assert summary["sessions_ended"] == 4 and summary["sessions_open"] == 1
    assert summary["sessions_unknown"] == 0
    assert summary["refusals"] == 3
    assert summary["refusals_by_reason"] == {"invalid_token": 3}
    assert sum(summary["close_reasons"].values()) == 4
    assert summary["skipped_lines"] == 0
    assert set(summary["services"]) == {"consoleauth", "novncproxy", "xvpvncproxy",
                                        "fake-compute"}
    for name, proc_log in (("novncproxy", novnc.proc.log_path), ("xvpvncproxy",
                                                                 xvp.proc.log_path)):
        assert summary["services"][name]["lines"] == len(proc_log.read_text().splitlines())
    top = {r["instance_uuid"]: r for r in summary["top_instances"]}
    assert top["vm-a"]["sessions"] == 2 and top["vm-a"]["bytes_up"] == 110
    assert top["vm-a"]["bytes_down"] == 110
    assert top["vm-b"]["sessions"] == 2 and top["vm-b"]["bytes_up"] == 10
    assert sorted(r["sessions"] for r in top.values()) == [1, 2, 2]  # and the fake host's

    rows = logs_json("sessions", str(log_dir))
    assert len(rows) == 5
    assert [r["started"] for r in rows] == sorted(r["started"] for r in rows)
    by_state = {}
    for row in rows:
        by_state.setdefault(row["state"], []).append(row)
    assert len(by_state["ended"]) == 4 and len(by_state["open"]) == 1
    assert by_state["open"][0]["service"] == "xvpvncproxy" and by_state["open"][0]["ended"] is None
    assert [r["kind"] for r in rows].count("novnc") == 3
    vm_a = logs_json("sessions", str(log_dir), "--instance", "vm-a", "--service", "novncproxy")
    assert sorted(r["bytes_up"] for r in vm_a) == [10, 100]
    assert all(r["close_reason"] == "client_closed" for r in vm_a)

    errors = logs_json("errors", str(log_dir))
    assert all(g["level"] in ("warning", "error") for g in errors)

    # the same lines as `docker compose logs` prints them, piped in; a .gz copy; a report
    compose = []
    for path in sorted(log_dir.glob("*.log")):
        replica = path.stem.rsplit("-", 1)[0] + "-1"
        compose += [f"{replica:<15} | {text}" for text in path.read_text().splitlines()]
    piped = logs_json("summary", stdin="Attaching to ...\n" + "\n".join(compose) + "\n")
    assert (piped["sessions_started"], piped["refusals"], piped["skipped_lines"]) == (5, 3, 1)
    gz = tmp_path / "novncproxy.log.gz"
    gz.write_bytes(gzip.compress(novnc.proc.log_path.read_bytes()))
    assert logs_json("summary", str(gz))["sessions_ended"] == 3
    report = logs("report", str(log_dir), "--html", str(tmp_path / "r.html")).stdout
    assert report.startswith(f"Wrote {tmp_path / 'r.html'}")
    assert 'data-chart="active"' in (tmp_path / "r.html").read_text()


def wait_ends(proc: ServiceProcess, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while sum(1 for line in proc.lines() if line.get("event") == "session.end") < count:
        assert time.monotonic() < deadline, f"{proc.name}: fewer than {count} session.end"
        time.sleep(0.05)
