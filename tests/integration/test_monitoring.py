"""Monitoring against a real local suite: Debian's `prometheus` scraping real consoleauth +
novncproxy + xvpvncproxy with the shipped alert rules, Debian's `lnav` reading their logs
with the shipped format, and `promtool` on the shipped configuration and rules.

One module-scoped suite (an echo server as the VNC target): the traffic fixture drives
sessions and refusals through both proxies once; the Prometheus test reads the series back
through the HTTP API, sees the alerts those cause (and not the others), holds xvpvncproxy
at max_sessions, and at last stops consoleauth.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from console_common.net.bus import BusClient

from tests.integration.test_novnc_protocol import TcpServer, WsClient, echo, frame
from tests.integration.test_xvp_protocol import OK, read_exactly
from tests.support import REPO, ServiceProcess, free_port, parse_log, remember_secret, wait_bus, wait_tcp

PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
LNAV_FORMAT = REPO / "monitoring" / "lnav" / "console_suite.json"
XVP_MAX_SESSIONS = 4
WAIT = 30.0  # bounded polling of Prometheus (1 s scrapes and rule evaluations)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is missing: `make system` installs it (Debian package)")
    return path


def _run(*argv: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          **kw)


# --- promtool on the shipped files ------------------------------------------------------------


def test_promtool_checks_the_shipped_configs_and_rules():
    promtool = _tool("promtool")
    for config in ("prometheus.yml", "compose.yml"):
        done = _run(promtool, "check", "config", config, cwd=PROMETHEUS_DIR)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr
    done = _run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_promtool_rule_tests_fire_and_stay_silent():
    """alerts_test.yml: each alert fires on its series and not on the others."""
    done = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    tests = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines()
              if line.strip().startswith("- alert:")]
    assert len(alerts) == 9
    for alert in alerts:  # every alert has a test that fires it and one that does not
        assert tests.count(f"alertname: {alert}") >= 2, alert


# --- the suite ------------------------------------------------------------------------------------


@dataclass
class Suite:
    logs: Path
    bus: str
    consoleauth_metrics_port: int
    novnc_port: int
    xvp_port: int
    xvp_metrics_port: int
    target: TcpServer
    services: list[ServiceProcess]
    prometheus: str = ""  # base URL
    driven: Counter = field(default_factory=Counter)

    def authorize(self, console_type: str) -> str:
        with BusClient([self.bus], timeout=5) as client:
            token = client.call("authorize_console", console_type=console_type,
                                host="127.0.0.1", port=self.target.port,
                                instance_uuid=f"vm-{console_type}")["token"]
        return remember_secret(token)

    # one session each, relaying `payload` and reading it back from the echo target
    def novnc_session(self, payload: bytes) -> None:
        ws = WsClient(self.novnc_port, f"/websockify?token={self.authorize('novnc')}")
        try:
            assert ws.reply.status == 101
            ws.send(frame(0x2, payload))
            assert ws.recv_bytes(len(payload)) == payload
        finally:
            ws.close()

    def xvp_open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.xvp_port), timeout=10)
        sock.sendall(f"CONNECT /console?token={self.authorize('xvpvnc')} HTTP/1.0\r\n\r\n"
                     .encode())
        assert read_exactly(sock, len(OK)) == OK
        return sock

    def xvp_session(self, payload: bytes) -> None:
        with self.xvp_open() as sock:
            sock.sendall(payload)
            assert read_exactly(sock, len(payload)) == payload

    def novnc_refused(self) -> None:
        ws = WsClient(self.novnc_port, "/websockify?token=not-a-valid-token-" + "x" * 30)
        try:
            assert ws.reply.status == 403
        finally:
            ws.close()

    def xvp_refused(self) -> None:
        with socket.create_connection(("127.0.0.1", self.xvp_port), timeout=10) as sock:
            sock.sendall(b"CONNECT /console?token=not-a-valid-token-xxxxxxxxxxxxxxxxxxxx "
                         b"HTTP/1.0\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 401")

    def query(self, promql: str) -> list[dict]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def api(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.prometheus}{path}", timeout=5) as resp:
            return json.load(resp)["data"]


def _prometheus_config(suite: Suite) -> dict:
    """The shipped rules with the local scrape jobs, every second (JSON is YAML)."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "900ms"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "consoleauth",
             "static_configs": [{"targets": [f"127.0.0.1:{suite.consoleauth_metrics_port}"]}]},
            {"job_name": "novncproxy",
             "static_configs": [{"targets": [f"127.0.0.1:{suite.novnc_port}"]}]},
            {"job_name": "xvpvncproxy",
             "static_configs": [{"targets": [f"127.0.0.1:{suite.xvp_metrics_port}"]}]},
        ],
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    prometheus_exe = _tool("prometheus")
    logs = tmp_path_factory.mktemp("monitoring")
    bus = f"tcp://127.0.0.1:{free_port()}"
    target = TcpServer(echo)
    services: list[ServiceProcess] = []
    prom: subprocess.Popen | None = None
    try:
        consoleauth_metrics_port = free_port()
        services.append(ServiceProcess.start(
            "consoleauth", ["--consoleauth-listen", bus, "--token-store", "memory",
                            "--consoleauth-metrics-port", str(consoleauth_metrics_port)], logs))
        wait_bus(bus)
        novnc_port, xvp_port, xvp_metrics_port = free_port(), free_port(), free_port()
        services.append(ServiceProcess.start("novncproxy", [
            "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(novnc_port),
            "--consoleauth-url", bus], logs))
        services.append(ServiceProcess.start("xvpvncproxy", [
            "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(xvp_port),
            "--xvpvncproxy-metrics-port", str(xvp_metrics_port), "--consoleauth-url", bus,
            "--max-sessions", str(XVP_MAX_SESSIONS)], logs))
        for port in (novnc_port, xvp_port, xvp_metrics_port):
            wait_tcp("127.0.0.1", port)
        s = Suite(logs, bus, consoleauth_metrics_port, novnc_port, xvp_port, xvp_metrics_port,
                  target, services)
        config = logs / "prometheus.json"
        config.write_text(json.dumps(_prometheus_config(s), indent=1))
        check = _run(_tool("promtool"), "check", "config", str(config))
        assert check.returncode == 0, check.stdout + check.stderr
        prom_port = free_port()
        with (logs / "prometheus.log").open("wb") as out:
            prom = subprocess.Popen(
                [prometheus_exe, f"--config.file={config}",
                 f"--storage.tsdb.path={logs / 'prometheus-data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        s.prometheus = f"http://127.0.0.1:{prom_port}"
        _wait_ready(s, prom, logs / "prometheus.log")
        # its discovery hands targets over after ~5 s: traffic before the first scrape
        # would be each counter's baseline, invisible to rate()
        _poll("first scrape of every service", lambda: _by_job(s.query("up")),
              {"consoleauth": 1.0, "novncproxy": 1.0, "xvpvncproxy": 1.0})
        yield s
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(5)
        for proc in reversed(services):
            proc.stop()
        target.stop()


def _wait_ready(suite: Suite, prom: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert prom.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{suite.prometheus}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready in {WAIT}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def traffic(suite: Suite) -> Counter:
    """Sessions and refusals through both proxies, in three rounds each seen by a scrape
    of its own (a counter's first sample is only the baseline for rate())."""
    for round_ in range(3):
        for _ in range(2):
            suite.novnc_session(b"n" * 1000)
            suite.driven["novnc_sessions"] += 1
            suite.driven["novnc_bytes_up"] += 1000
        suite.xvp_session(b"x" * 500)
        suite.driven["xvp_sessions"] += 1
        suite.driven["xvp_bytes_up"] += 500
        # the rule wants > 0.5/s over 5 minutes: 150 refusals at least in that window
        for _ in range(100 if round_ else 1):
            suite.novnc_refused()
            suite.driven["novnc_refused"] += 1
        for _ in range(3):
            suite.xvp_refused()
            suite.driven["xvp_refused"] += 1
        # each round in a scrape of its own, whatever the load: rate() sees the increase
        _poll(f"round {round_} scraped", lambda: _by_job(suite.query(
            'console_refused_total{reason="invalid_token"}')),
            {"novncproxy": float(suite.driven["novnc_refused"]),
             "xvpvncproxy": float(suite.driven["xvp_refused"])})
    return suite.driven


def _poll(what: str, probe, want, timeout: float = WAIT):
    """probe() until it returns ``want``; the last value in the failure."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: {want!r} not seen within {timeout}s; last: {last!r}")


def _by_job(result: list[dict]) -> dict[str, float]:
    return {r["metric"].get("job", ""): float(r["value"][1]) for r in result}


def test_prometheus_scrapes_the_suite_and_evaluates_the_rules(suite: Suite, traffic: Counter):
    # every target up, the events link to consoleauth heard by both proxies
    both = {"novncproxy": 1.0, "xvpvncproxy": 1.0}
    _poll("every target up", lambda: _by_job(suite.query("up")), {**both, "consoleauth": 1.0})
    _poll("events links up", lambda: _by_job(suite.query("console_events_link_up")), both)
    # consoleauth's own count: one authorize_console per session the test made
    sessions = traffic["novnc_sessions"] + traffic["xvp_sessions"]
    _poll("consoleauth authorize_console ok", lambda: _by_job(suite.query(
        'consoleauth_requests_total{method="authorize_console", result="ok"}')),
        {"consoleauth": float(sessions)})
    invalid = _by_job(suite.query('sum by (job) (consoleauth_requests_total{'
                                  'result="InvalidToken"})'))
    assert invalid["consoleauth"] >= 1  # the refusals (token checks may be batched)
    # what the traffic did, read back through the HTTP API
    expected = {
        "console_sessions_total": {"novncproxy": traffic["novnc_sessions"],
                                   "xvpvncproxy": traffic["xvp_sessions"]},
        'console_refused_total{reason="invalid_token"}': {
            "novncproxy": traffic["novnc_refused"], "xvpvncproxy": traffic["xvp_refused"]},
        'console_bytes_total{direction="up"}': {"novncproxy": traffic["novnc_bytes_up"],
                                                "xvpvncproxy": traffic["xvp_bytes_up"]},
        'console_token_checks_total{result="ok"}': {"novncproxy": traffic["novnc_sessions"],
                                                    "xvpvncproxy": traffic["xvp_sessions"]},
        "console_sessions_max": {"novncproxy": 20000, "xvpvncproxy": XVP_MAX_SESSIONS},
    }
    for promql, want in expected.items():
        want = {job: float(v) for job, v in want.items()}
        _poll(promql, lambda q=promql: _by_job(suite.query(q)), want)
    assert _by_job(suite.query("console_sessions_open")) == {"novncproxy": 0.0,
                                                             "xvpvncproxy": 0.0}

    # the shipped rules are loaded and evaluate without errors against the real series
    groups = suite.api("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert len(rules) == 9
    assert {r["health"] for r in rules.values()} == {"ok"}, rules

    # refusals spiked (200 in 3 s on novncproxy): pending (the rule wants 2 minutes of it)
    def alerts() -> dict[tuple[str, str], str]:
        return {(a["labels"]["alertname"], a["labels"].get("job", "")): a["state"]
                for a in suite.api("/api/v1/alerts")["alerts"]}

    _poll("ConsoleRefusalsSpiking on novncproxy",
          lambda: alerts().get(("ConsoleRefusalsSpiking", "novncproxy")), "pending")
    # xvpvncproxy held at max_sessions: sessions_open / sessions_max = 1 > 0.9
    held = [suite.xvp_open() for _ in range(XVP_MAX_SESSIONS)]
    try:
        _poll("sessions_open at max", lambda: _by_job(suite.query(
            "console_sessions_open")).get("xvpvncproxy"), float(XVP_MAX_SESSIONS))
        _poll("ConsoleProxyNearMaxSessions on xvpvncproxy",
              lambda: alerts().get(("ConsoleProxyNearMaxSessions", "xvpvncproxy")), "pending")
    finally:
        for sock in held:
            sock.close()
    suite.driven["xvp_sessions"] += XVP_MAX_SESSIONS
    now = alerts()
    # consoleauth answers, links are up, targets are up: those stay silent
    for quiet in ("ConsoleauthDown", "ConsoleauthUnheard", "ConsoleauthErrors",
                  "ConsoleTokenCheckErrors", "ConsoleProxyNoEventsLink", "ConsoleProxyDown",
                  "ConsoleTokenCheckSlow"):
        assert not any(name == quiet for name, _ in now), now

    # consoleauth stops: Prometheus cannot scrape it, and no proxy hears its heartbeats
    suite.services[0].stop()
    for alert, job in (("ConsoleauthDown", "consoleauth"), ("ConsoleauthUnheard", ""),
                       ("ConsoleProxyNoEventsLink", "novncproxy"),
                       ("ConsoleProxyNoEventsLink", "xvpvncproxy")):
        _poll(f"{alert} {job}", lambda a=alert, j=job: alerts().get((a, j)), "pending")


# --- lnav over the suite's logs -----------------------------------------------------------


def _lnav(home: Path, sql: str, *files: Path) -> list[dict[str, str]]:
    done = _run(_tool("lnav"), "-n", "-c", f";{sql}", "-c", ":write-csv-to -",
                *map(str, files), env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                       "TERM": "dumb"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stderr.lower(), done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


def test_lnav_shows_the_suite_logs_as_columns(suite: Suite, traffic: Counter, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    installed = _run(_tool("lnav"), "-i", str(LNAV_FORMAT), env={"HOME": str(home),
                                                                 "PATH": "/usr/bin:/bin"})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (home / ".lnav" / "formats" / "installed" / "console_suite_log.json").exists()
    for proc in suite.services[1:]:  # the proxies logged every session's end
        want = traffic["novnc_sessions" if proc.name == "novncproxy" else "xvp_sessions"]
        _poll(f"{proc.name} session.end lines", lambda p=proc, w=want: sum(
            line.get("event") == "session.end" for line in p.lines()) >= w, True)
    # a snapshot: the services still log (consoleauth is down after the test above, so a
    # proxy may log control.report_failed at any time) and both readers must see one state
    files = []
    for proc in suite.services:
        files.append(tmp_path / proc.log_path.name)
        files[-1].write_bytes(proc.log_path.read_bytes())

    # what lnav makes of them, against the lines read directly
    lines = [line for path in files for line in parse_log(path)]
    rows = _lnav(home, "SELECT service, event, log_level, count(*) AS n, "
                       "sum(bytes_up) AS up FROM console_suite_log "
                       "GROUP BY service, event, log_level", *files)
    got = {(r["service"], r["event"], r["log_level"]): int(r["n"]) for r in rows}
    want = Counter((line["service"], line["event"], line["level"]) for line in lines)
    assert got == dict(want)
    assert {r["service"] for r in rows} == {"consoleauth", "novncproxy", "xvpvncproxy"}
    starts = {r["service"]: int(r["n"]) for r in rows if r["event"] == "session.start"}
    assert starts["novncproxy"] >= traffic["novnc_sessions"]
    assert starts["xvpvncproxy"] >= traffic["xvp_sessions"]
    up = {r["service"]: int(r["up"]) for r in rows if r["event"] == "session.end"}
    assert up == {s: sum(line["bytes_up"] for line in lines
                         if line["service"] == s and line["event"] == "session.end")
                  for s in ("novncproxy", "xvpvncproxy")}
    assert up["novncproxy"] >= traffic["novnc_bytes_up"]

    # session fields are columns: one row per session, start and end joined by session_id
    sessions = _lnav(home, "SELECT s.session_id, s.service, s.client, s.instance_uuid, "
                           "e.close_reason, e.bytes_up, e.duration_s "
                           "FROM console_suite_log s JOIN console_suite_log e "
                           "ON e.session_id = s.session_id AND e.event = 'session.end' "
                           "WHERE s.event = 'session.start'", *files)
    assert len(sessions) == sum(starts.values())
    assert {r["client"] for r in sessions} == {"127.0.0.1"}
    assert {r["instance_uuid"] for r in sessions} == {"vm-novnc", "vm-xvpvnc"}
    assert {r["close_reason"] for r in sessions} <= {"client_closed", "target_closed"}
    assert all(float(r["duration_s"]) >= 0 for r in sessions)
    refused = _lnav(home, "SELECT service, reason, status, count(*) AS n FROM "
                          "console_suite_log WHERE event IN ('session.refused', 'xvp.refused') "
                          "AND status IS NOT NULL "  # not the probes that sent nothing
                          "GROUP BY service, reason, status", *files)
    by_service = {(r["service"], r["status"]): int(r["n"]) for r in refused}
    assert by_service == {("novncproxy", "403"): traffic["novnc_refused"],
                          ("xvpvncproxy", "401"): traffic["xvp_refused"]}
