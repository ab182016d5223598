// The console page: connects the noVNC client library to novncproxy and tells the user,
// in plain words, why a console cannot be shown.
//
// Machine-readable state for tests and monitoring lives on <body>:
//   data-state  "connecting" | "connected" | "disconnected" | "failed"
//   data-reason why it is not connected (see REASONS below), "" while all is well
// The token is only ever put in the WebSocket URL and the admission probe's URL.

import RFB from "/novnc/core/rfb.js";

const MESSAGES = {
    invalid_token: "This console link is invalid or has expired. Ask for a new console link.",
    consoleauth_unavailable: "The console service is unavailable right now. Try again in a moment.",
    origin_refused: "This page's origin is not allowed to open the console.",
    bad_request: "The console link is malformed. Ask for a new console link.",
    too_many: "Too many console connections are open right now. Try again in a moment.",
    unreachable: "The machine's console is unreachable. It may be stopped or its host may be down.",
    security_failed: "The console proxy could not authenticate to the machine's console. " +
        "Ask for a new console link; if it fails again, tell your operator.",
    revoked: "This console session was closed: the link was revoked.",
    proxy_unreachable: "The console proxy cannot be reached.",
    handshake_failed: "The console connection could not be opened. Try Reconnect.",
};

// WebSocket close codes the proxy uses after the 101 (DESIGN.md, novncproxy).
const CLOSE_POLICY = 1008; // "console revoked"
const CLOSE_TOO_BIG = 1009;
const CLOSE_INTERNAL = 1011; // "console unreachable"
const SECURITY_FAILED = "console security negotiation failed"; // 1011 from the security proxy
const CLOSE_PROTOCOL = 1002;

const PROBE_TIMEOUT_MS = 10000;
const DISCONNECT_GRACE_MS = 1500;

const body = document.body;
const statusEl = document.getElementById("status");
const messageEl = document.getElementById("message");
const screenEl = document.getElementById("screen");
const scaleBox = document.getElementById("scale");
const cadButton = document.getElementById("ctrl-alt-del");
const reconnectButton = document.getElementById("reconnect");
const credForm = document.getElementById("credentials");
const credFields = {
    username: document.getElementById("username"),
    password: document.getElementById("password"),
    target: document.getElementById("target"),
};

// ---- Where to connect --------------------------------------------------------------

function parseBool(value, fallback) {
    if (value === null || value === "") {
        return fallback;
    }
    const v = value.toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) {
        return true;
    }
    if (["0", "false", "no", "off"].includes(v)) {
        return false;
    }
    return fallback;
}

function bracketHost(host) {
    // An IPv6 literal needs brackets inside a URL; location.hostname already has them.
    return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

// Nova's URLs carry the token twice: `token=T` and `path=?token=T` (noVNC 1.x reads
// `path` as the WebSocket path and its query). `path` may also name a WebSocket path.
function readTarget(loc) {
    const params = new URLSearchParams(loc.search);
    const pathParam = params.get("path") || "";
    let wsPath = "websockify";
    let token = params.get("token") || "";
    if (pathParam) {
        const q = pathParam.indexOf("?");
        const pathPart = (q < 0 ? pathParam : pathParam.slice(0, q)).replace(/^\/+/, "");
        if (pathPart) {
            wsPath = pathPart;
        }
        if (!token && q >= 0) {
            token = new URLSearchParams(pathParam.slice(q + 1)).get("token") || "";
        }
    }
    const secure = parseBool(params.get("encrypt"), loc.protocol === "https:");
    const host = bracketHost(params.get("host") || loc.hostname);
    const port = params.get("port") || loc.port;
    const authority = port ? `${host}:${port}` : host;
    const query = `?token=${encodeURIComponent(token)}`;
    return {
        token,
        wsUrl: `${secure ? "wss" : "ws"}://${authority}/${wsPath}${query}`,
        probeUrl: `${secure ? "https" : "http"}://${authority}/${wsPath}${query}`,
    };
}

// ---- What the user sees --------------------------------------------------------------

function show(state, reason, text, { overlay = false } = {}) {
    body.dataset.state = state;
    body.dataset.reason = reason;
    statusEl.textContent = text;
    statusEl.title = text;
    if (overlay) {
        messageEl.textContent = text;
        messageEl.hidden = false;
    } else {
        messageEl.hidden = true;
        messageEl.textContent = "";
    }
    cadButton.disabled = state !== "connected";
}

function showEnded(wasConnected, reason, text) {
    hideCredentials();
    show(wasConnected ? "disconnected" : "failed", reason, text, { overlay: true });
}

function hideCredentials() {
    credForm.hidden = true;
    for (const input of Object.values(credFields)) {
        input.value = "";
    }
}

function askCredentials(types) {
    const wanted = new Set(types && types.length ? types : ["password"]);
    for (const [name, input] of Object.entries(credFields)) {
        input.parentElement.hidden = !wanted.has(name);
        input.required = wanted.has(name);
    }
    credForm.hidden = false;
    statusEl.textContent = "The machine's console asks for a password";
    const first = ["username", "password", "target"].find((n) => wanted.has(n));
    credFields[first].focus();
}

// ---- One connection attempt -------------------------------------------------------------

// Why the proxy refused the WebSocket handshake: the browser hides the HTTP status of a
// refused upgrade, so ask the same URL with a plain GET; the proxy runs the same admission
// checks and answers JSON {"ok": false, "error": "...", "message": "..."}.
async function probeAdmission(url) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), PROBE_TIMEOUT_MS);
    let response;
    try {
        response = await fetch(url, {
            headers: { Accept: "application/json" },
            cache: "no-store",
            credentials: "same-origin",
            signal: controller.signal,
        });
    } catch {
        return { reason: "proxy_unreachable" };
    } finally {
        clearTimeout(timer);
    }
    let answer = null;
    try {
        answer = await response.json();
    } catch {
        answer = null;
    }
    if (answer && answer.ok === false && typeof answer.error === "string") {
        return { reason: answer.error, message: answer.message };
    }
    return { reason: "handshake_failed", status: response.status };
}

class Session {
    constructor(target) {
        this.target = target;
        this.opened = false; // the WebSocket reached OPEN (the proxy said 101)
        this.connected = false; // noVNC finished the RFB handshake
        this.ended = false;
        this.socketClosed = false; // the close event came: onSocketClose decides the end
        this.failure = null; // set by noVNC events that explain the end better than the close
        this.desktopName = "";
        this.graceTimer = null;

        const ws = new WebSocket(target.wsUrl);
        ws.binaryType = "arraybuffer";
        // addEventListener, not onclose: noVNC takes over the on* handlers when it attaches.
        ws.addEventListener("open", () => { this.opened = true; });
        ws.addEventListener("close", (event) => this.onSocketClose(event));
        this.ws = ws;

        const rfb = new RFB(screenEl, ws, { shared: true });
        rfb.scaleViewport = scaleBox.checked;
        rfb.addEventListener("connect", () => this.onConnect());
        rfb.addEventListener("disconnect", (e) => this.onRfbDisconnect(e));
        rfb.addEventListener("desktopname", (e) => this.onDesktopName(e));
        rfb.addEventListener("credentialsrequired", (e) => {
            if (!this.ended) {
                askCredentials(e.detail.types);
            }
        });
        rfb.addEventListener("securityfailure", (e) => {
            const why = e.detail.reason || `security result ${e.detail.status}`;
            this.failure = {
                reason: "security",
                text: `The machine's console refused the connection: ${why}`,
            };
        });
        this.rfb = rfb;
        window.consoleRfb = rfb;
        show("connecting", "", "Connecting…");
    }

    onConnect() {
        if (this.ended) {
            return;
        }
        this.connected = true;
        hideCredentials();
        const name = this.desktopName;
        show("connected", "", name ? `Connected to ${name}` : "Connected");
        this.rfb.focus({ preventScroll: true });
    }

    onDesktopName(event) {
        this.desktopName = event.detail.name || "";
        if (this.connected && !this.ended) {
            show("connected", "", `Connected to ${this.desktopName || "the console"}`);
        }
        document.title = this.desktopName ? `${this.desktopName} - Console` : "Console";
    }

    onRfbDisconnect(event) {
        // noVNC may give up before the socket reports its close (for example a security
        // failure, or a protocol error on our side): wait briefly for the close code.
        if (this.ended || this.socketClosed || this.graceTimer) {
            return;
        }
        const clean = event.detail.clean;
        this.graceTimer = setTimeout(() => {
            if (!this.ended && !this.socketClosed) {
                this.finish(this.failure || {
                    reason: "closed",
                    text: clean ? "Disconnected: the console was closed"
                        : "Disconnected: the console connection failed",
                });
            }
        }, DISCONNECT_GRACE_MS);
    }

    async onSocketClose(event) {
        if (this.ended) {
            return;
        }
        this.socketClosed = true;
        clearTimeout(this.graceTimer);
        if (this.failure) {
            this.finish(this.failure);
            return;
        }
        const { code, reason } = event;
        if (code === CLOSE_INTERNAL && reason === SECURITY_FAILED) {
            this.finish({ reason: "security_failed", text: MESSAGES.security_failed });
        } else if (code === CLOSE_INTERNAL) {
            this.finish({ reason: "unreachable", text: MESSAGES.unreachable });
        } else if (code === CLOSE_POLICY) {
            this.finish({ reason: "revoked", text: MESSAGES.revoked });
        } else if (!this.opened) {
            // Refused before the 101 (the browser reports 1006 and hides the HTTP status).
            show("connecting", "", "Checking the console link…");
            const verdict = await probeAdmission(this.target.probeUrl);
            if (this.ended) {
                return;
            }
            this.finish({ reason: verdict.reason, text: messageFor(verdict) });
        } else {
            let text = "Disconnected: ";
            if (reason) {
                text += reason;
            } else if (code === CLOSE_TOO_BIG) {
                text += "a message was too big";
            } else if (code === CLOSE_PROTOCOL) {
                text += "protocol error";
            } else if (code === 1000 || code === 1001 || code === 1005) {
                text += "the console was closed";
            } else {
                text += `the connection was lost (code ${code})`;
            }
            this.finish({ reason: "closed", text });
        }
    }

    finish({ reason, text }) {
        if (this.ended) {
            return;
        }
        this.ended = true;
        clearTimeout(this.graceTimer);
        showEnded(this.connected, reason, text);
    }

    // Ended by the user (Reconnect, leaving the page): no message, no events.
    stop() {
        this.ended = true;
        clearTimeout(this.graceTimer);
        try {
            this.rfb.disconnect();
        } catch {
            // already disconnected: nothing left to close
        }
    }
}

function messageFor(verdict) {
    if (MESSAGES[verdict.reason]) {
        return MESSAGES[verdict.reason];
    }
    if (verdict.message) {
        return `The console proxy refused the connection: ${verdict.message}`;
    }
    return MESSAGES.handshake_failed;
}

// ---- The page ----------------------------------------------------------------------------

const target = readTarget(window.location);
let session = null;

function connect() {
    if (session) {
        session.stop();
        session = null;
    }
    hideCredentials();
    if (!target.token) {
        show("failed", "invalid_token", MESSAGES.invalid_token, { overlay: true });
        return;
    }
    try {
        session = new Session(target);
    } catch (err) {
        show("failed", "handshake_failed", `${MESSAGES.handshake_failed} (${err.message})`,
            { overlay: true });
    }
}

scaleBox.addEventListener("change", () => {
    if (session) {
        session.rfb.scaleViewport = scaleBox.checked;
    }
});

cadButton.addEventListener("click", () => {
    if (session && session.connected && !session.ended) {
        session.rfb.sendCtrlAltDel();
        session.rfb.focus({ preventScroll: true });
    }
});

reconnectButton.addEventListener("click", () => connect());

credForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!session || session.ended) {
        return;
    }
    const creds = {};
    for (const [name, input] of Object.entries(credFields)) {
        if (!input.parentElement.hidden) {
            creds[name] = input.value;
        }
    }
    hideCredentials();
    statusEl.textContent = "Connecting…";
    session.rfb.sendCredentials(creds);
});

window.addEventListener("pagehide", () => {
    if (session) {
        session.stop();
    }
});

connect();
