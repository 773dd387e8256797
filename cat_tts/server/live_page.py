"""The server's live page (`GET /live`): text is spoken while it is typed or pasted, through the realtime WebSocket.

One static HTML page with its script inline (no files to package, nothing loaded from elsewhere). As the text box
grows, the page sends what was added (`text.append`); "Speak now" is `text.commit`, "Finish" `text.done`, "Stop"
`response.cancel`. Audio (pcm) is played with the Web Audio API as it arrives, each piece scheduled right after the
previous one; every segment is listed with the depth the server chose for it. A browser cannot set headers on a
WebSocket, so the API key (if the server has one) goes in the `api_key` query parameter.

The page keeps its numbers in `window.catLive` (samples scheduled, segments, errors, state) for the browser test.
"""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cat-tts live</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  p.hint { color: #555; margin-top: 0; }
  label { display: inline-block; margin: .3rem 1rem .3rem 0; }
  input, select { font: inherit; padding: .15rem .3rem; }
  textarea { width: 100%; min-height: 8rem; font: inherit; padding: .5rem; box-sizing: border-box; }
  button { font: inherit; margin: .4rem .4rem .4rem 0; padding: .3rem .9rem; }
  table { border-collapse: collapse; width: 100%; margin-top: .8rem; }
  th, td { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid #ddd; }
  td.depth { font-weight: 600; white-space: nowrap; }
  #status { font-family: monospace; }
  #errors { color: #a00; }
</style>
</head>
<body>
<h1>cat-tts live</h1>
<p class="hint">Type or paste: speech starts after the first clause, while you are still typing. Each segment is
generated at the depth shown (0.125 kbps per layer); with depth <em>auto</em> the server lowers it when busy.</p>
<div>
  <label>Voice <input id="voice" value="default" size="12"></label>
  <label>Depth <select id="depth">
    <option value="auto" selected>auto</option>
    <option>32</option><option>24</option><option>16</option><option>8</option><option>4</option><option>1</option>
  </select></label>
  <label>Max depth (auto) <input id="max_depth" type="number" min="1" max="32" size="4" placeholder="all"></label>
  <label>API key <input id="key" type="password" size="16" placeholder="if the server has one"></label>
</div>
<textarea id="text" placeholder="Start typing..."></textarea>
<div>
  <button id="commit">Speak now</button>
  <button id="done">Finish</button>
  <button id="stop">Stop</button>
  <button id="reset">New session</button>
  <span id="status">idle</span>
</div>
<div id="errors"></div>
<table>
  <thead><tr><th>#</th><th>depth</th><th>kbps</th><th>text</th><th>audio</th></tr></thead>
  <tbody id="segments"></tbody>
</table>
<script>
"use strict";
const PATH = "__PATH__";
const RATE = 24000;
const stats = window.catLive = { state: "idle", samples: 0, segments: [], errors: [], firstAudioMs: null };
let ws = null, sent = 0, pending = [], ctx = null, playAt = 0, sources = [], startedAt = null;
const $ = (id) => document.getElementById(id);

function status(text) { stats.state = text; $("status").textContent = text; }

function settings() {
  const s = { voice: $("voice").value || "default", response_format: "pcm" };
  const depth = $("depth").value;
  s.depth = depth === "auto" ? "auto" : Number(depth);
  const max = $("max_depth").value;
  if (depth === "auto" && max) s.max_depth = Number(max);
  return s;
}

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  else pending.push(message);
}

function connect() {
  if (ws && ws.readyState <= WebSocket.OPEN) return;
  const url = new URL(PATH, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if ($("key").value) url.searchParams.set("api_key", $("key").value);
  ctx = ctx || new AudioContext({ sampleRate: RATE });
  ctx.resume();
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  pending.unshift({ type: "session.update", session: settings() });
  status("connecting");
  ws.onopen = () => { status("open"); for (const m of pending.splice(0)) ws.send(JSON.stringify(m)); };
  ws.onmessage = (e) => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : play(e.data));
  ws.onclose = (e) => { status(`closed (${e.code}${e.reason ? ": " + e.reason : ""})`); ws = null; };
}

function play(buffer) {
  const pcm = new Int16Array(buffer);
  if (!pcm.length) return;
  if (stats.firstAudioMs === null && startedAt !== null) stats.firstAudioMs = performance.now() - startedAt;
  const audio = ctx.createBuffer(1, pcm.length, RATE);
  const data = audio.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const source = ctx.createBufferSource();
  source.buffer = audio;
  source.connect(ctx.destination);
  playAt = Math.max(playAt, ctx.currentTime + 0.05);
  source.start(playAt);
  playAt += audio.duration;
  sources.push(source);
  source.onended = () => { sources = sources.filter((s) => s !== source); };
  stats.samples += pcm.length;
}

function silence() {
  for (const s of sources) { try { s.stop(); } catch (err) { /* already ended */ } }
  sources = [];
  playAt = 0;
}

function onEvent(event) {
  if (event.type === "segment.started") {
    stats.segments.push({ segment: event.segment, depth: event.depth, text: event.text, seconds: null });
    const row = document.createElement("tr");
    row.id = `segment-${event.segment}`;
    row.dataset.depth = event.depth;
    for (const [cls, value] of [["", event.segment], ["depth", event.depth], ["", (event.depth * 0.125) + " kbps"],
                                ["text", event.text], ["audio", "..."]]) {
      const cell = document.createElement("td");
      if (cls) cell.className = cls;
      cell.textContent = value;
      row.appendChild(cell);
    }
    $("segments").appendChild(row);
  } else if (event.type === "segment.done") {
    const row = $(`segment-${event.segment}`);
    if (row) row.lastChild.textContent = event.audio_seconds.toFixed(2) + " s";
    const s = stats.segments.find((x) => x.segment === event.segment);
    if (s) s.seconds = event.audio_seconds;
  } else if (event.type === "response.cancelled") {
    silence();
  } else if (event.type === "error") {
    const e = event.error;
    stats.errors.push(e);
    $("errors").textContent = (e.param ? e.param + ": " : "") + e.message;
  } else if (event.type === "done") {
    stats.done = event;
  }
}

$("text").addEventListener("input", () => {
  const value = $("text").value;
  if (value.length < sent) { sent = value.length; return; }  // text removed: already sent text cannot be unsaid
  if (startedAt === null) startedAt = performance.now();
  connect();
  send({ type: "text.append", text: value.slice(sent) });
  sent = value.length;
});
for (const id of ["voice", "depth", "max_depth"]) {
  $(id).addEventListener("change", () => { if (ws) send({ type: "session.update", session: settings() }); });
}
$("commit").onclick = () => send({ type: "text.commit" });
$("done").onclick = () => send({ type: "text.done" });
$("stop").onclick = () => { silence(); send({ type: "response.cancel" }); };
$("reset").onclick = () => {
  if (ws) ws.close();
  ws = null; pending = []; sent = 0; startedAt = null; silence();
  $("text").value = ""; $("segments").textContent = ""; $("errors").textContent = "";
  Object.assign(stats, { samples: 0, segments: [], errors: [], firstAudioMs: null, done: undefined });
  status("idle");
};
</script>
</body>
</html>
"""


def live_page(path: str) -> str:
    """The page, talking to the WebSocket at `path` on the same host."""
    return _PAGE.replace("__PATH__", html.escape(path, quote=True))
