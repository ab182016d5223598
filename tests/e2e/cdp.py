"""A small Chrome DevTools Protocol driver for end-to-end tests.

Starts Debian's headless Chromium, talks CDP over one WebSocket (the ``websockets`` sync
client) using a flat session attached to one page target, and gives tests what they need:
navigate, evaluate, wait_for, keyboard and mouse input, screenshots and canvas pixels.

Every wait is bounded; ``close()`` always kills Chromium's whole process tree, even when
Chromium has already died or stopped answering.
"""

from __future__ import annotations

import base64
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Self

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-port=0",
)
CLONE_NEWNET = 0x40000000

# What wait_for reports about the page when it gives up (our console page's state, or
# just the URL on any other page).
DESCRIBE_PAGE_JS = """(() => {
    const b = document.body;
    const status = document.getElementById("status");
    return {
        url: location.href,
        readyState: document.readyState,
        state: b ? b.dataset.state : undefined,
        reason: b ? b.dataset.reason : undefined,
        status: status ? status.textContent : undefined,
    };
})()"""

# key name -> (code, windowsVirtualKeyCode, text produced)
_SPECIAL_KEYS: dict[str, tuple[str, int, str]] = {
    "Enter": ("Enter", 13, "\r"),
    "Tab": ("Tab", 9, "\t"),
    "Backspace": ("Backspace", 8, ""),
    "Escape": ("Escape", 27, ""),
    "Delete": ("Delete", 46, ""),
    "ArrowLeft": ("ArrowLeft", 37, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "ArrowRight": ("ArrowRight", 39, ""),
    "ArrowDown": ("ArrowDown", 40, ""),
    "Home": ("Home", 36, ""),
    "End": ("End", 35, ""),
    " ": ("Space", 32, " "),
}
# US layout punctuation: char -> (code, windowsVirtualKeyCode, needs shift)
_PUNCTUATION: dict[str, tuple[str, int, bool]] = {
    "-": ("Minus", 189, False),
    "_": ("Minus", 189, True),
    "=": ("Equal", 187, False),
    "+": ("Equal", 187, True),
    "[": ("BracketLeft", 219, False),
    "{": ("BracketLeft", 219, True),
    "]": ("BracketRight", 221, False),
    "}": ("BracketRight", 221, True),
    "\\": ("Backslash", 220, False),
    "|": ("Backslash", 220, True),
    ";": ("Semicolon", 186, False),
    ":": ("Semicolon", 186, True),
    "'": ("Quote", 222, False),
    '"': ("Quote", 222, True),
    ",": ("Comma", 188, False),
    "<": ("Comma", 188, True),
    ".": ("Period", 190, False),
    ">": ("Period", 190, True),
    "/": ("Slash", 191, False),
    "?": ("Slash", 191, True),
    "`": ("Backquote", 192, False),
    "~": ("Backquote", 192, True),
}
_SHIFTED_DIGITS = ")!@#$%^&*("
SHIFT = 8  # CDP modifier bit


class CDPError(RuntimeError):
    """A CDP command failed, Chromium went away, or a wait ran out."""


def _key_event_fields(key: str) -> dict[str, Any]:
    """CDP Input.dispatchKeyEvent fields for one key name or one character."""
    if key in _SPECIAL_KEYS:
        code, vk, text = _SPECIAL_KEYS[key]
        return {"key": key, "code": code, "windowsVirtualKeyCode": vk, "text": text, "modifiers": 0}
    if len(key) != 1:
        raise ValueError(f"unknown key {key!r}")
    shift = False
    if key.isascii() and key.isalpha():
        code, vk, shift = f"Key{key.upper()}", ord(key.upper()), key.isupper()
    elif key.isdigit():
        code, vk = f"Digit{key}", ord(key)
    elif key in _SHIFTED_DIGITS:
        digit = str(_SHIFTED_DIGITS.index(key))
        code, vk, shift = f"Digit{digit}", ord(digit), True
    elif key in _PUNCTUATION:
        code, vk, shift = _PUNCTUATION[key]
    else:  # anything else: a key that only produces its text
        code, vk = "", 0
    return {
        "key": key,
        "code": code,
        "windowsVirtualKeyCode": vk,
        "text": key,
        "modifiers": SHIFT if shift else 0,
    }


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (read from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name in parentheses may contain spaces: split after the last ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _socket_in_netns(netns: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP socket connected from inside network namespace ``netns``.

    A socket keeps the namespace it was created in, so a short-lived thread switches
    itself into the namespace (setns is per thread), connects, and hands the socket back.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}", "rb") as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            result["sock"] = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if "error" in result:
        raise CDPError(f"cannot reach Chromium in netns {netns}") from result["error"]
    if "sock" not in result:
        raise CDPError(f"connecting to Chromium in netns {netns} timed out")
    return result["sock"]


class Browser:
    """One headless Chromium with one page, driven over CDP."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        user_data_dir: Path,
        log_path: Path,
        ws: ClientConnection,
        owns_dir: bool,
        command_timeout: float,
    ) -> None:
        self._proc = proc
        self.user_data_dir = user_data_dir
        self.log_path = log_path
        self._ws = ws
        self._owns_dir = owns_dir
        self._ids = itertools.count(1)
        self._session_id: str | None = None
        self._events: deque[dict[str, Any]] = deque(maxlen=2000)
        self.console: deque[str] = deque(maxlen=500)  # page console messages and errors
        self.command_timeout = command_timeout
        self._closed = False

    # ---- start and stop --------------------------------------------------------------

    @classmethod
    def launch(
        cls,
        user_data_dir: str | os.PathLike[str] | None = None,
        *,
        netns: str | None = None,
        chromium: str = CHROMIUM,
        window_size: tuple[int, int] = (1024, 768),
        start_timeout: float = 30.0,
        command_timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
    ) -> Browser:
        """Start Chromium with a fresh profile and open a page target.

        ``user_data_dir`` must be a new or empty directory (a temporary one when None);
        ``netns`` runs Chromium inside that network namespace (``ip netns exec``).
        """
        owns_dir = user_data_dir is None
        profile = Path(tempfile.mkdtemp(prefix="cdp-profile-") if owns_dir else user_data_dir)
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        log_path = profile / "chromium-output.log"
        argv = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window_size[0]},{window_size[1]}",
            *extra_args,
            "about:blank",
        ]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            port, path = cls._wait_for_port(proc, port_file, log_path, start_timeout)
            url = f"ws://127.0.0.1:{port}{path}"
            sock = _socket_in_netns(netns, "127.0.0.1", port, 10) if netns else None
            conn = connect(
                url,
                sock=sock,
                proxy=None,
                open_timeout=10,
                ping_interval=None,
                close_timeout=2,
                max_size=256 * 1024 * 1024,
                compression=None,
            )
            # Entered as a context manager (websockets >= 17.1 warns otherwise); close()
            # below ends it.
            ws = conn.__enter__()
        except BaseException:
            cls._kill_tree(proc)
            if owns_dir:
                shutil.rmtree(profile, ignore_errors=True)
            raise
        browser = cls(proc, profile, log_path, ws, owns_dir, command_timeout)
        try:
            browser._open_page()
        except BaseException:
            browser.close()
            raise
        return browser

    @staticmethod
    def _wait_for_port(
        proc: subprocess.Popen[bytes], port_file: Path, log_path: Path, timeout: float
    ) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CDPError(
                    f"Chromium exited with {proc.returncode} at start:\n{_tail(log_path)}"
                )
            try:
                lines = port_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2 and lines[0].strip().isdigit():
                return int(lines[0]), lines[1].strip()
            time.sleep(0.05)
        raise CDPError(f"Chromium wrote no {port_file} in {timeout:g}s:\n{_tail(log_path)}")

    def _open_page(self) -> None:
        created = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget",
            {"targetId": created["targetId"], "flatten": True},
            session=False,
        )
        self._session_id = attached["sessionId"]
        self.target_id = created["targetId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            pids = _descendants(proc.pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in [proc.pid, *pids]:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Zygotes and renderers may outlive the main process: kill what is left of the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Close the browser; always kills the process tree. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # Noted before asking Chromium to quit: a child that left the process group and
        # outlives the main process is no longer found below it afterwards.
        family = _descendants(self._proc.pid) if self._proc.poll() is None else []
        try:
            if self._proc.poll() is None:
                self.send("Browser.close", session=False, timeout=3)
        except (CDPError, OSError):
            pass  # it is being killed below anyway
        try:
            self._ws.close()
        except (ConnectionClosed, OSError):
            pass
        try:
            self._proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        self._kill_tree(self._proc)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._owns_dir:
            shutil.rmtree(self.user_data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the protocol -----------------------------------------------------------------

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one CDP command and return its result (raises CDPError on an error)."""
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session and self._session_id:
            message["sessionId"] = self._session_id
        deadline = time.monotonic() + (timeout or self.command_timeout)
        try:
            self._ws.send(json.dumps(message))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CDPError(f"{method}: no answer in {timeout or self.command_timeout:g}s")
                try:
                    reply = json.loads(self._ws.recv(timeout=remaining))
                except TimeoutError:
                    continue
                if reply.get("id") == msg_id:
                    if "error" in reply:
                        raise CDPError(
                            f"{method}: {reply['error'].get('message')} "
                            f"{reply['error'].get('data', '')}".rstrip()
                        )
                    return reply.get("result", {})
                if "method" in reply:
                    self._record(reply)
        except ConnectionClosed as exc:
            raise CDPError(
                f"{method}: Chromium closed the DevTools connection "
                f"(exit {self._proc.poll()}):\n{_tail(self.log_path)}"
            ) from exc

    def _record(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"log.{entry.get('level')}: {entry.get('text')}")

    def pump_events(self, duration: float = 0.0) -> None:
        """Read pending events (console messages) for up to ``duration`` seconds."""
        deadline = time.monotonic() + duration
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                event = json.loads(self._ws.recv(timeout=remaining))
            except TimeoutError:
                return
            except ConnectionClosed as exc:
                raise CDPError("Chromium closed the DevTools connection") from exc
            if "method" in event:
                self._record(event)
            if remaining <= 0:
                return

    # ---- page actions -----------------------------------------------------------------

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` and wait until the document has loaded."""
        result = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout=timeout)

    def evaluate(self, js: str, timeout: float | None = None) -> Any:
        """Evaluate a JavaScript expression in the page and return its value as JSON data.

        Promises are awaited. The value is copied by value: end expressions that yield a
        big object (such as the RFB object) with ``; true`` or serialising it is slow.
        """
        result = self.send(
            "Runtime.evaluate",
            {
                "expression": js,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": True,
            },
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript error: {text}")
        return result.get("result", {}).get("value")

    def wait_for(
        self,
        js_predicate: str,
        timeout: float = 30.0,
        interval: float = 0.1,
        describe: str = DESCRIBE_PAGE_JS,
    ) -> Any:
        """Poll until ``js_predicate`` is truthy; return its value.

        On timeout raise CDPError with the last value or error, the page's state and its
        recent console messages.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.evaluate(js_predicate, timeout=max(1.0, min(10.0, timeout)))
                if last:
                    return last
            except CDPError as exc:
                if self._proc.poll() is not None:
                    raise
                last = f"error: {exc}"
            if time.monotonic() >= deadline:
                break
            self.pump_events(interval)
        try:
            state = self.evaluate(describe, timeout=5)
        except CDPError as exc:
            state = f"(page state unavailable: {exc})"
        console = "\n  ".join(self.console) or "(none)"
        raise CDPError(
            f"timed out after {timeout:g}s waiting for {js_predicate!r}\n"
            f"last value: {last!r}\npage: {state}\nconsole:\n  {console}"
        )

    def press_key(self, key: str) -> None:
        """Press and release one key: a character or a name like "Enter", "Backspace"."""
        fields = _key_event_fields(key)
        down = dict(fields, type="keyDown" if fields["text"] else "rawKeyDown")
        if not fields["text"]:
            del down["text"]
        if not fields["code"]:
            del down["code"]
        up = {k: v for k, v in down.items() if k != "text"}
        up["type"] = "keyUp"
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", up)

    def type_text(self, text: str) -> None:
        for char in text:
            self.press_key("Enter" if char == "\n" else char)

    def click(self, x: float, y: float, button: str = "left") -> None:
        """Move to (x, y) in CSS pixels of the viewport, press and release."""
        base = {"x": x, "y": y}
        self.send("Input.dispatchMouseEvent", dict(base, type="mouseMoved"))
        self.send(
            "Input.dispatchMouseEvent", dict(base, type="mousePressed", button=button, clickCount=1)
        )
        self.send(
            "Input.dispatchMouseEvent",
            dict(base, type="mouseReleased", button=button, clickCount=1),
        )

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the viewport."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    def canvas_size(self, selector: str = "#screen canvas") -> tuple[int, int]:
        """The canvas's own size in pixels (the framebuffer size for noVNC)."""
        size = self.evaluate(f"""(() => {{
            const c = document.querySelector({json.dumps(selector)});
            return c ? [c.width, c.height] : null;
        }})()""")
        if not size:
            raise CDPError(f"no canvas matches {selector!r}")
        return int(size[0]), int(size[1])

    def canvas_pixels(
        self, x: int, y: int, w: int, h: int, selector: str = "#screen canvas"
    ) -> bytes:
        """RGBA bytes (w * h * 4) of a rectangle of the canvas, in canvas pixels."""
        js = f"""(() => {{
            const c = document.querySelector({json.dumps(selector)});
            if (!c) {{ throw new Error("no canvas matches " + {json.dumps(selector)}); }}
            const data = c.getContext("2d").getImageData({x}, {y}, {w}, {h}).data;
            let s = "";
            for (let i = 0; i < data.length; i += 0x8000) {{
                s += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
            }}
            return btoa(s);
        }})()"""
        raw = base64.b64decode(self.evaluate(js))
        if len(raw) != w * h * 4:
            raise CDPError(f"canvas read gave {len(raw)} bytes, expected {w * h * 4}")
        return raw


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no Chromium log)"
    return text[-limit:] or "(empty Chromium log)"
