// DOM helpers. Text always goes in as text (never as HTML), so nothing a ledger, a merchant
// or an error message holds can run as script.

/** An element: h("a", {href: "#/x", class: "y"}, "text", child, …). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let fieldIds = 0;

/** A labelled form field: the label names the control, the hint and error describe it. */
export function field(label, control, hint) {
  const id = control.id || `f${++fieldIds}`;
  control.id = id;
  const error = h("div", { class: "error", id: `${id}-error`, role: "alert", hidden: true });
  const parts = [h("label", { for: id }, label), control];
  const described = [`${id}-error`];
  if (hint) {
    parts.push(h("div", { class: "hint", id: `${id}-hint` }, hint));
    described.unshift(`${id}-hint`);
  }
  control.setAttribute("aria-describedby", described.join(" "));
  parts.push(error);
  const wrap = h("div", { class: "field" }, parts);
  wrap.showError = (message) => {
    error.textContent = message || "";
    error.hidden = !message;
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  };
  wrap.control = control;
  return wrap;
}

/** A <select> of `options` ([value, text] or value), with `value` selected. */
export function select(name, options, value = "") {
  return h(
    "select",
    { name },
    options.map((o) => {
      const [v, t] = Array.isArray(o) ? o : [o, o];
      return h("option", { value: v, selected: v === value }, t);
    }),
  );
}

/** A status word, coloured. */
export function status(s) {
  return h("span", { class: `status ${s}` }, s);
}

/** A time as the reader's locale writes it (the ISO form in its title). */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

/** A short message at the bottom of the screen. */
export function toast(message) {
  // The live region stays in the page (an empty one shows nothing), so every message is
  // announced.
  const el = document.getElementById("toast");
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.textContent = ""), 5000);
}

/** Closes every open dialog and clears the messages (the session ended). */
export function closeDialogs() {
  for (const d of document.querySelectorAll("dialog")) {
    d.returnValue = "no";
    d.close("no");
    d.remove();
  }
  document.getElementById("toast").textContent = "";
}

/** Re-renders `container` with `render`, keeping the focus on the control of the same name. */
export async function keepingFocus(container, render) {
  const active = document.activeElement;
  const name = active && container.contains(active) ? active.getAttribute("aria-label") || active.textContent.trim() : null;
  await render();
  if (!name) return;
  for (const el of container.querySelectorAll("button, a, input, select, textarea")) {
    if ((el.getAttribute("aria-label") || el.textContent.trim()) === name) {
      el.focus();
      return;
    }
  }
  // The control is gone (a Retry once retried): the page's heading, not the void.
  document.querySelector("main h1")?.focus();
}

/** Asks before an action that cannot be undone: resolves true when confirmed. */
export function confirmAction(title, text, verb) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-title", "aria-describedby": "confirm-text" },
      h("h2", { id: "confirm-title" }, title),
      h("p", { id: "confirm-text" }, text),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "danger", value: "yes", onclick: () => dialog.close("yes") }, verb),
        h("button", { type: "button", value: "no", onclick: () => dialog.close("no"), autofocus: true }, "Cancel"),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A notice for an error of the API (or the network). */
export function problem(error) {
  return h("div", { class: "notice bad", role: "alert" }, error.message || String(error));
}

/** The page's heading, focused so screen readers announce the new page. */
export function heading(text) {
  const el = h("h1", { tabindex: "-1" }, text);
  queueMicrotask(() => el.focus({ preventScroll: true }));
  return el;
}
