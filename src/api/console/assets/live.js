// Live events over the WebSocket. The token goes in the first frame ({"auth": …}), never in
// the URL; a dropped socket reconnects with ?since= so the status changes it missed are
// replayed, and every (re)connection tells the pages to read again ("resync"), so nothing
// that happened while no socket listened is missed; a socket closed for its token (4001)
// ends the session; one refused for good (1008, 4029) is not retried in a loop.

import { BASE, token } from "./api.js";

const listeners = new Set();
let socket = null;
let lastAt = null;
let retry = 500;
let stopped = true;
let generation = 0;
let timer = null;
let onState = () => {};
let onTokenEnd = () => {};

/** `f(event)` for every event; returns a function that removes it. */
export function listen(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

function emit(event) {
  for (const f of [...listeners]) f(event);
}

/** Starts the socket; `state(text, on)` says how it is. */
export function start(state, tokenEnded) {
  stop();
  onState = state;
  onTokenEnd = tokenEnded;
  stopped = false;
  connect();
}

export function stop() {
  stopped = true;
  generation++;
  clearTimeout(timer);
  lastAt = null;
  retry = 500;
  if (socket) socket.close(1000, "signed out");
  socket = null;
}

function connect() {
  if (stopped || !token()) return;
  const mine = ++generation;
  const current = () => mine === generation && !stopped;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // Replay from a second before the last event seen, so nothing falls between.
  const since = lastAt ? `?since=${encodeURIComponent(new Date(Date.parse(lastAt) - 1000).toISOString())}` : "";
  const ws = new WebSocket(`${scheme}//${location.host}${BASE}/ws${since}`);
  socket = ws;
  let settled = null;
  ws.onopen = () => {
    if (!current()) return ws.close(1000);
    ws.send(JSON.stringify({ auth: token() }));
    // Accepted once it stays open a moment: then the pages read again what they show,
    // and a later drop starts its backoff afresh.
    settled = setTimeout(() => {
      if (!current()) return;
      onState("Live", true);
      emit({ event: "resync" });
      retry = 500;
    }, 400);
  };
  ws.onmessage = (m) => {
    if (!current()) return;
    let event;
    try {
      event = JSON.parse(m.data);
    } catch {
      return;
    }
    if (event.at) lastAt = event.at;
    emit(event);
  };
  ws.onclose = (e) => {
    clearTimeout(settled);
    if (!current()) return;
    socket = null;
    if (e.code === 4001) {
      onTokenEnd();
      return;
    }
    if (e.code === 1008 || e.code === 4029) {
      onState(`Live updates refused: ${e.reason || e.code}`, false);
      return;
    }
    onState("Reconnecting…", false);
    timer = setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10_000);
  };
}
