"""Helpers for tests that run the real services as processes on free loopback ports.

    with ServiceProcess.start("consoleauth", ["--consoleauth-listen", ep, "--token-store",
                              "memory"], log_dir=tmp_path) as ca:
        wait_bus(ep)
        ...

Every process logs JSON to its own file under ``log_dir``; ``all_log_lines()`` lets a
test (and the session-wide token scan in conftest) read them all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LOG_FILES: list[Path] = []  # every service log written in this test session
SECRETS: set[str] = set()  # every token/password tests saw; must never appear in logs


def remember_secret(value: str) -> str:
    SECRETS.add(value)
    return value


# Key material that must never reach a log, whoever's it is: PEM private keys, ZeroMQ
# certificate secret keys (``secret-key = "..."``), and the secrets found below.
KEY_MATERIAL = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----|secret-key\s*=")
_ZMQ_SECRET = re.compile(r'secret-key\s*=\s*"([^"]+)"')
_PEM_BODY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\s*([A-Za-z0-9+/=]{32,})")
_URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@/\s]+)@")


def remember_service_secrets(args: Sequence[str]) -> None:
    """The secrets a service is started with: VNC passwords in ``--instances``, the CURVE
    secret key and TLS key it reads, a password in a store URL."""
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--instances":
            for match in re.finditer(r"password=([^;,]+)", value):
                remember_secret(match.group(1))
        elif flag in ("--bus-secret-key-file", "--key") and value and Path(value).is_file():
            text = Path(value).read_text(errors="replace")
            for match in [*_ZMQ_SECRET.finditer(text), *_PEM_BODY.finditer(text)]:
                remember_secret(match.group(1))
    for value in args:
        for match in _URL_PASSWORD.finditer(value):
            remember_secret(match.group(1))


TOKEN_MIN = 32  # a token is 32-256 characters (DESIGN): shorter strings a test sends are
# deliberate garbage, not secrets, and a short one (say "abc123") would match by chance
# inside the hex of some session id


def remember_bus_call(method: str, args: dict, result: object) -> None:
    """Tokens a test sent or got over the bus (authorize_console, get_vnc_console...)."""
    sent = [args.get("token"), *(args.get("tokens") or ())]
    got = [result.get("token")] if isinstance(result, dict) else []
    for token in (*sent, *got):
        if isinstance(token, str) and len(token) >= TOKEN_MIN:
            remember_secret(token)


def leaks_in_logs(paths: Sequence[Path], secrets: set[str], min_length: int = 6) -> list[str]:
    """One line per log line holding a secret or key material: ``path:line: what (event)``,
    the secret itself masked (this report is a log too)."""
    wanted = sorted((s for s in secrets if len(s) >= min_length), key=len, reverse=True)
    found = []
    for path in paths:
        if not path.exists():
            continue
        for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
            hits = [s for s in wanted if s in raw]
            key = KEY_MATERIAL.search(raw)
            if not hits and key is None:
                continue
            masked = raw
            for secret in hits:
                masked = masked.replace(secret, f"<secret {secret[:3]}…{len(secret)} chars>")
            what = "key material" if key is not None and not hits else "a token/password"
            found.append(f"{path}:{number}: {what}: {masked[:300]}")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_tcp(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def console_token(control: str, kind: str, instance: str = "vm-1") -> str:
    """A console token from a fake compute host's control endpoint (``get_vnc_console``, as
    Nova's compute would), remembered as a secret."""
    from console_common.net.bus import BusClient

    with BusClient([control], timeout=5) as client:
        reply = client.call("get_vnc_console", instance_id=instance, console_type=kind)
    return remember_secret(reply["token"])


def wait_bus(endpoint: str, timeout: float = 15.0, method: str = "ping") -> dict:
    from console_common.net.bus import BusClient
    from console_common.proto.bus import BusUnavailable

    deadline = time.monotonic() + timeout
    with BusClient([endpoint], timeout=0.5, attempts=1) as client:
        while True:
            try:
                return client.call(method)
            except BusUnavailable:
                if time.monotonic() > deadline:
                    raise


# consoleauth bus endpoint -> its events endpoint, for the proxies the tests start after it
EVENTS_OF_BUS: dict[str, str] = {}


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args[:-1] else None


def _with_events(command: str, args: list[str], netns: str | None) -> list[str]:
    """Give every consoleauth the tests start an events port of its own (the default,
    6086, would be shared by every consoleauth of the run), and every proxy the events
    endpoint of the consoleauth it is pointed at, unless the test chose them."""
    if netns is not None:
        return args
    if command == "consoleauth" and "--consoleauth-events-listen" not in args:
        events = f"tcp://127.0.0.1:{free_port()}"
        args += ["--consoleauth-events-listen", events]
        if (bus := _flag(args, "--consoleauth-listen")) is not None:
            EVENTS_OF_BUS[bus] = events
    elif command in ("novncproxy", "xvpvncproxy") and "--consoleauth-events-url" not in args:
        buses = (_flag(args, "--consoleauth-url") or "").split(",")
        events = [EVENTS_OF_BUS[b] for b in buses if b in EVENTS_OF_BUS]
        if events:
            args += ["--consoleauth-events-url", ",".join(events)]
    return args


class ServiceProcess:
    """A service command run as a real process, logging JSON to a file."""

    def __init__(self, popen: subprocess.Popen, log_path: Path, name: str) -> None:
        self.popen, self.log_path, self.name = popen, log_path, name

    @classmethod
    def start(cls, command: str, args: Sequence[str], log_dir: Path, env: dict | None = None,
              netns: str | None = None, name: str | None = None) -> "ServiceProcess":
        name = name or command
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{len(LOG_FILES)}.log"
        LOG_FILES.append(log_path)
        SCHEMA_CHECKED.setdefault(log_path, (0, 0))
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("CONSOLE_CONFIG_FILE", None)
        exe = str(VENV_BIN / command)
        args = _with_events(command, list(args), netns)
        remember_service_secrets(args)
        argv = [exe, "--log-format", "json", *args]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        fh = open(log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
        fh.close()
        return cls(popen, log_path, name)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def lines(self) -> list[dict]:
        return list(parse_log(self.log_path))

    def wait_for_log(self, event: str, timeout: float = 10.0, **fields: object) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {event} {fields} in log:\n"
                             + self.log_path.read_text(errors="replace")[-3000:])

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_log(path: Path) -> Iterator[dict]:
    """Every line of a service log must be one JSON object (DESIGN: logs)."""
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{path}:{number}: not a JSON log line: {raw[:300]!r}") from None
        yield obj


# Every ServiceProcess log is validated against the log schema
# (console_common.runtime.logschema) as it grows, after each test and at the end of the
# session (tests/conftest.py): how far each file was checked (bytes, lines).
SCHEMA_CHECKED: dict[Path, tuple[int, int]] = {}


def log_schema_problems(final: bool = False) -> list[str]:
    """The JSON lines services wrote since the last call that do not fit the log schema,
    one report each: ``file:line: service event: problem`` then the line. Only whole lines
    unless ``final`` (a running service may be half-way through one). Lines that are not
    JSON are left to ``parse_log``: the schema is about the JSON lines."""
    from console_common.runtime.logschema import problems

    found: list[str] = []
    for path, (offset, number) in list(SCHEMA_CHECKED.items()):
        try:
            if path.stat().st_size == offset:
                continue  # nothing new (most files, after most tests)
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            continue
        end = len(data) if final else data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            number += 1
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            for problem in problems(line):
                found.append(f"{path}:{number}: {problem}\n    {raw[:400].decode(errors='replace')}")
        SCHEMA_CHECKED[path] = (offset + end, number)
    return found


def all_log_text() -> str:
    return "\n".join(p.read_text(errors="replace") for p in LOG_FILES if p.exists())


class RedisServer:
    """A real redis-server (Debian) on a free loopback port, that tests can stop, pause
    (SIGSTOP), resume and start again on the same port."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        import shutil

        if not shutil.which("redis-server"):
            raise AssertionError("redis-server is missing: `make system` installs it")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = extra
        self.popen: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - closed by the child
        self.popen = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        wait_tcp("127.0.0.1", self.port)
        return self

    def pause(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait(10)
        self.popen = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
