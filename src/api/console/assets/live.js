// Live events over the WebSocket. The token goes in the first frame ({"auth": …}), never in
// the URL; a dropped socket reconnects with ?since= so the status changes it missed are
// replayed; a socket closed for its token (4001) ends the session.

import { BASE, token } from "./api.js";

const listeners = new Set();
let socket = null;
let lastAt = null;
let retry = 500;
let stopped = true;
let onState = () => {};
let onTokenEnd = () => {};

/** `f(event)` for every event; returns a function that removes it. */
export function listen(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

/** Starts the socket; `state(true|false)` says whether it is connected. */
export function start(state, tokenEnded) {
  onState = state;
  onTokenEnd = tokenEnded;
  stopped = false;
  connect();
}

export function stop() {
  stopped = true;
  lastAt = null;
  if (socket) socket.close(1000, "signed out");
  socket = null;
}

function connect() {
  if (stopped || !token()) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // Replay from a second before the last event seen, so nothing falls between.
  const since = lastAt ? `?since=${encodeURIComponent(new Date(Date.parse(lastAt) - 1000).toISOString())}` : "";
  const ws = new WebSocket(`${scheme}//${location.host}${BASE}/ws${since}`);
  socket = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({ auth: token() }));
    retry = 500;
    onState(true);
  };
  ws.onmessage = (m) => {
    let event;
    try {
      event = JSON.parse(m.data);
    } catch {
      return;
    }
    if (event.at) lastAt = event.at;
    for (const f of listeners) f(event);
  };
  ws.onclose = (e) => {
    if (socket === ws) socket = null;
    onState(false);
    if (stopped) return;
    if (e.code === 4001) {
      onTokenEnd();
      return;
    }
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10_000);
  };
}
