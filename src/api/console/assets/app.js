// The console: sign-in, the session, the sections and the router (#/ledgers, #/ledgers/ID,
// #/new, #/batches, #/batches/ID, #/schedules, #/webhooks, #/webhooks/ID).

import { claims, setToken, token, whenExpired, BASE } from "./api.js";
import { h, fill, field, heading, problem, closeDialogs } from "./ui.js";
import * as live from "./live.js";
import { ledgerList, ledgerPage, newLedger, resetFilters } from "./ledgers.js";
import { batchList, batchPage, scheduleList, webhookList, webhookPage } from "./more.js";

const main = document.getElementById("main");
let expiryTimer = null;
let leave = null;
let shown = 0;

const routes = [
  [/^#\/ledgers\/(\d+)$/, (m) => ledgerPage(main, m[1])],
  [/^#\/new$/, () => newLedger(main)],
  [/^#\/batches\/(\d+)$/, (m) => batchPage(main, m[1])],
  [/^#\/batches$/, () => batchList(main)],
  [/^#\/schedules$/, () => scheduleList(main)],
  [/^#\/webhooks\/(\d+)$/, (m) => webhookPage(main, m[1])],
  [/^#\/webhooks$/, () => webhookList(main)],
  [/^#\/ledgers$/, () => ledgerList(main)],
];

async function route() {
  const hash = location.hash || "#/ledgers";
  // Only routes are routes: an in-page anchor leaves the page as it is.
  if (!hash.startsWith("#/") && main.childElementCount > 0 && token()) return;
  if (leave) leave();
  leave = null;
  const mine = ++shown;
  if (!token()) return signIn();
  for (const a of document.querySelectorAll("#nav a")) {
    const here = hash.startsWith(a.getAttribute("href"));
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, show] of routes) {
    const m = pattern.exec(hash);
    if (m) {
      try {
        const stop = (await show(m)) || null;
        // Another page came meanwhile: this one's listener goes at once.
        if (mine === shown) leave = stop;
        else if (stop) stop();
      } catch (e) {
        if (mine === shown) fill(main, heading("Something went wrong"), problem(e));
      }
      return;
    }
  }
  location.hash = "#/ledgers";
}

/** The session starts: a timer for the token's end, the live socket, the header. */
function begin() {
  const c = claims(token()) || {};
  document.getElementById("subject").textContent = c.sub ? `Signed in as ${c.sub}` : "";
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  clearTimeout(expiryTimer);
  if (c.exp) armExpiry(c.exp * 1000);
  const liveState = document.getElementById("live");
  live.start(
    (text, on) => {
      liveState.textContent = text;
      liveState.classList.toggle("on", on);
    },
    () => end("Your session has expired. Paste a new token to go on."),
  );
}

/** Ends the session at `at` (ms): timers cannot wait longer than 2^31-1 ms, so a long-lived
 * token's end is reached in steps. */
function armExpiry(at) {
  const left = at - Date.now();
  if (left <= 0) return end("Your session has expired. Paste a new token to go on.");
  expiryTimer = setTimeout(() => armExpiry(at), Math.min(left, 2 ** 31 - 1));
}

/** The session ends (signed out, expired or refused): back to the sign-in screen, with
 * nothing of the session left on it (dialogs, messages, filters). */
function end(message) {
  clearTimeout(expiryTimer);
  live.stop();
  setToken(null);
  closeDialogs();
  resetFilters();
  shown++;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  if (leave) leave();
  leave = null;
  signIn(message);
}

async function signIn(message) {
  const input = h("textarea", {
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const tokenField = field("Access token", input, "A JWT for your subject; it stays in this tab only (sessionStorage) and is never put in a URL.");
  const howTo = h("div", { class: "notice", hidden: true });
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    message ? h("div", { class: "notice bad", role: "alert" }, message) : null,
    tokenField,
    howTo,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = input.value.trim().replace(/^Bearer\s+/i, "");
    const c = claims(value);
    if (!c) return tokenField.showError("This is not a JWT (three base64url parts separated by dots).");
    if (c.exp && c.exp * 1000 <= Date.now()) return tokenField.showError("This token has expired: mint a new one.");
    let answer;
    try {
      answer = await fetch(`${BASE}/ledgers?limit=1`, { headers: { Authorization: `Bearer ${value}` } });
    } catch {
      return tokenField.showError("The service cannot be reached.");
    }
    if (!answer.ok) {
      let said = `the service answered ${answer.status}`;
      try {
        said = (await answer.json()).error.message;
      } catch {
        /* not JSON */
      }
      return tokenField.showError(`The service refused this token: ${said}`);
    }
    setToken(value);
    begin();
    if (!location.hash || location.hash === "#/") location.hash = "#/ledgers";
    else route();
  });
  fill(main, heading("Sign in"), form);
  // After the heading took focus: the token goes in first.
  setTimeout(() => input.focus(), 0);
  try {
    const settings = await (await fetch(`${BASE}/console/settings.json`)).json();
    if (settings.devTokens) {
      fill(
        howTo,
        "This service signs its own tokens (the embedded default). Mint one in a shell beside it: ",
        h("code", {}, "ledger token --sub NAME --ttl 1h"),
        " — and grant NAME a role first: ",
        h("code", {}, "ledger policy grant NAME merchant_operator m_acme"),
        ".",
      );
      howTo.hidden = false;
    }
  } catch {
    /* the hint is optional */
  }
}

whenExpired(() => end("The service no longer accepts your token (expired or revoked). Paste a new one."));
document.getElementById("sign-out").addEventListener("click", () => end("Signed out."));
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", route);
if (token()) begin();
route();
