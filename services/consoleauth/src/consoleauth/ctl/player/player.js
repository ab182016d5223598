// The playback page of `consolectl recordings play`: replays a recorded console session
// with the real noVNC client library. noVNC's RFB class accepts any WebSocket-like
// channel; ours hands it the recorded server bytes at their times and swallows what the
// viewer sends back (its version, pixel format, update requests).
//
// The server (consolectl) serves /recording.json (header, duration, damage) and
// /recording.bin: frames of [f64 offset seconds][u32 size][bytes], big-endian, the first
// one a plain RFB 3.8 handshake with security None (never the VNC server's password).
//
// State for tests lives on <body>: data-state "loading" | "playing" | "paused" | "seeking"
// | "ended" | "failed", data-position (seconds shown), data-damaged "true" | "false".
// window.player has play(), pause(), seek(seconds), setSpeed(n).

import RFB from "/novnc/core/rfb.js";

const TICK_MS = 20;
const SEEK_BATCH_BYTES = 4 * 1024 * 1024; // yield to the viewer's own queue between batches

const body = document.body;
const screenEl = document.getElementById("screen");
const playButton = document.getElementById("play");
const timeEl = document.getElementById("time");
const timeline = document.getElementById("timeline");
const progress = document.getElementById("progress");
const metaEl = document.getElementById("meta");
const messageEl = document.getElementById("message");

class ReplayChannel {
    constructor() {
        // the properties noVNC's Websock.attach() checks for
        this.binaryType = "arraybuffer";
        this.protocol = "";
        this.readyState = "open";
        this.onopen = null;
        this.onmessage = null;
        this.onerror = null;
        this.onclose = null;
    }

    send() {}

    close() {
        if (this.readyState === "closed") {
            return;
        }
        this.readyState = "closed";
        if (this.onclose) {
            this.onclose({ code: 1000, reason: "", wasClean: true });
        }
    }

    push(bytes) {
        if (this.readyState === "open" && this.onmessage) {
            this.onmessage({ data: bytes });
        }
    }
}

let meta = null;
let frames = []; // {t, data}
let duration = 0;
let rfb = null;
let channel = null;
let next = 0; // index of the next frame to hand the viewer
let position = 0;
let playing = false;
let speed = 1;
let baseWall = 0;
let basePos = 0;
let seeking = 0; // generation of the seek in progress (0: none)
let generation = 0;

function fmt(seconds) {
    const m = Math.floor(seconds / 60);
    const s = (seconds - m * 60).toFixed(1).padStart(4, "0");
    return `${m}:${s}`;
}

function say(text) {
    messageEl.textContent = text;
    messageEl.hidden = !text;
}

function setState(state) {
    body.dataset.state = state;
    playButton.textContent = state === "playing" ? "Pause" : "Play";
}

function render() {
    timeEl.textContent = `${fmt(position)} / ${fmt(duration)}`;
    progress.style.width = duration > 0 ? `${(100 * position) / duration}%` : "0";
    body.dataset.position = position.toFixed(3);
}

function parseFrames(buffer) {
    const view = new DataView(buffer);
    const out = [];
    let pos = 0;
    while (pos + 12 <= buffer.byteLength) {
        const t = view.getFloat64(pos, false);
        const size = view.getUint32(pos + 8, false);
        pos += 12;
        if (pos + size > buffer.byteLength) {
            break;
        }
        out.push({ t, data: new Uint8Array(buffer, pos, size) });
        pos += size;
    }
    return out;
}

function newViewer() {
    if (rfb) {
        rfb.disconnect();
    }
    screenEl.replaceChildren();
    channel = new ReplayChannel();
    rfb = new RFB(screenEl, channel, { shared: true });
    rfb.viewOnly = true;
    rfb.focusOnClick = false;
    rfb.scaleViewport = false;
    rfb.resizeSession = false;
    const mine = rfb;
    rfb.addEventListener("disconnect", (e) => {
        if (mine === rfb && !e.detail.clean) {
            playing = false;
            setState("failed");
            say(`noVNC could not follow the recording at ${fmt(position)}: the recorded ` +
                "viewer likely asked the server for a pixel format or encoding noVNC does " +
                "not use (a desktop viewer through xvpvncproxy, say).");
        }
    });
    next = 0;
}

function feedUntil(t) {
    while (next < frames.length && frames[next].t <= t) {
        channel.push(frames[next].data);
        next += 1;
    }
}

function atEnd() {
    playing = false;
    position = duration;
    feedUntil(Infinity);
    setState("ended");
    if (meta.damage) {
        say(`Playback reached the damage in this recording (${meta.damage}): ` +
            "the rest of the session is not in the file.");
    }
    render();
}

function tick() {
    if (playing && !seeking) {
        position = basePos + ((performance.now() - baseWall) / 1000) * speed;
        if (position >= duration) {
            atEnd();
        } else {
            feedUntil(position);
            render();
        }
    }
}

function rebase() {
    basePos = position;
    baseWall = performance.now();
}

function play() {
    if (seeking || body.dataset.state === "failed") {
        return;
    }
    if (position >= duration) {
        seek(0).then(play);
        return;
    }
    rebase();
    playing = true;
    setState("playing");
}

function pause() {
    if (playing) {
        tick();
        playing = false;
        setState("paused");
    }
}

function setSpeed(n) {
    if (playing) {
        tick();
    }
    speed = n;
    rebase();
    for (const b of document.querySelectorAll("#speeds button")) {
        b.classList.toggle("on", Number(b.dataset.speed) === n);
    }
}

// Seek: a fresh viewer fed everything up to t, fast, in batches (the viewer may pause on
// its own render queue; a batch boundary lets it catch up).
async function seek(t) {
    const target = Math.max(0, Math.min(duration, t));
    const wasPlaying = playing && target < duration;
    const mine = ++generation;
    seeking = mine;
    playing = false;
    setState("seeking");
    newViewer();
    let batch = 0;
    while (next < frames.length && frames[next].t <= target) {
        channel.push(frames[next].data);
        batch += frames[next].data.length;
        next += 1;
        if (batch >= SEEK_BATCH_BYTES) {
            batch = 0;
            await new Promise((resolve) => setTimeout(resolve, 0));
            if (generation !== mine) {
                return; // a later seek took over
            }
        }
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (generation !== mine) {
        return;
    }
    seeking = 0;
    position = target;
    render();
    if (target >= duration) {
        atEnd();
    } else if (wasPlaying) {
        play();
    } else {
        setState("paused");
    }
}

function showMeta() {
    const h = meta.header;
    const rows = [
        ["Session", h.session_id],
        ["Instance", h.instance_uuid],
        ["Client", `${h.client} (${h.kind})`],
        ["Started", h.started_iso || new Date(h.started * 1000).toISOString()],
        ["Desktop", `${h.desktop_name ?? "?"} ${h.width ?? "?"}×${h.height ?? "?"}`],
        ["RFB", `${h.rfb_version ?? "?"}, security ${h.security_type ?? "?"}`],
        ["Input recorded", h.record_input ? "yes" : "no"],
        ["Ended", meta.end ? `${meta.end.close_reason} after ${meta.end.duration_s}s` : "—"],
        ["File", meta.file],
    ];
    metaEl.replaceChildren();
    for (const [k, v] of rows) {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        dd.textContent = v;
        metaEl.append(dt, dd);
    }
}

async function load() {
    try {
        const [m, bin] = await Promise.all([
            fetch("/recording.json").then((r) => r.json()),
            fetch("/recording.bin").then((r) => r.arrayBuffer()),
        ]);
        meta = m;
        frames = parseFrames(bin);
        duration = meta.duration;
    } catch (err) {
        setState("failed");
        say(`The recording could not be loaded: ${err}`);
        return;
    }
    showMeta();
    body.dataset.damaged = meta.damage ? "true" : "false";
    if (meta.damage) {
        say(`This recording is damaged (${meta.damage}): it plays up to the damage.`);
    } else if (meta.stopped) {
        say(`Recording stopped early: ${meta.stopped.detail || meta.stopped.note}.`);
    } else if (!meta.end) {
        say("This recording has no end: the session may still be open, or the proxy stopped.");
    }
    newViewer();
    feedUntil(0);
    render();
    playButton.disabled = false;
    const autoplay = new URLSearchParams(location.search).get("autoplay") !== "0";
    setState("paused");
    if (autoplay) {
        play();
    }
}

playButton.addEventListener("click", () => (playing ? pause() : play()));
for (const b of document.querySelectorAll("#speeds button")) {
    b.addEventListener("click", () => setSpeed(Number(b.dataset.speed)));
}
timeline.addEventListener("click", (e) => {
    const box = timeline.getBoundingClientRect();
    seek(((e.clientX - box.left) / box.width) * duration);
});

window.player = {
    play, pause, seek, setSpeed,
    get position() { return position; },
    get duration() { return duration; },
    get times() { return frames.map((f) => f.t); },
};
setInterval(tick, TICK_MS);
load();
