// Batches (with live progress bars), schedules (make, pause, resume, delete) and webhook
// endpoints (make, rotate the secret, delete, deliveries and redelivery).

import { del, get, patch, post, withQuery } from "./api.js";
import { confirmAction, field, fill, h, heading, keepingFocus, problem, select, status, time, toast } from "./ui.js";
import { listen } from "./live.js";

const TYPES = ["STATEMENT", "SUMMARY"];
const FORMATS = ["CSV", "PDF", "XLSX"];
const CADENCES = ["DAILY", "WEEKLY", "MONTHLY", "QUARTERLY", "YEARLY"];
const EVENTS = ["ledger.completed", "ledger.rejected", "batch.completed"];

/** "m_a, m_b" or "*" as the API takes merchantIds. */
function merchantsOf(text) {
  const t = text.trim();
  if (t === "*") return "*";
  return t.split(/[\s,]+/).filter(Boolean);
}

/** Shows an API error next to its field, or in `notice`. */
function showError(err, fields, notice) {
  const name = (err.field || "").replace(/\[\d+\]$/, "");
  const target = fields[name];
  if (target) {
    target.showError(err.message);
    target.control.focus();
  } else {
    fill(notice, problem(err));
  }
}

function bar(counts, total) {
  const done = (counts.COMPLETED || 0) + (counts.REJECTED || 0) + (counts.EXISTING || 0);
  const label = `${done} of ${total} done`;
  return h("span", {}, h("progress", { max: Math.max(total, 1), value: done, "aria-label": `Progress: ${label}` }), " ", h("span", { class: "muted" }, label));
}

function table(label, headings, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "aria-label": label },
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

export async function batchList(main) {
  const list = h("div");
  const render = async () => {
    try {
      const page = await get("/batches?limit=50");
      fill(
        list,
        page.items.length === 0
          ? h("p", { class: "muted" }, "No batch yet. Make one with POST /batches or `ledger batch create`.")
          : table(
              "Batches, newest first",
              ["Batch", "Period", "Type", "Status", "Progress", "Created"],
              page.items.map((b) =>
                h(
                  "tr",
                  { "data-id": b.id },
                  h("td", {}, h("a", { href: `#/batches/${b.id}` }, b.id)),
                  h("td", {}, b.period),
                  h("td", {}, b.type),
                  h("td", { class: "state" }, status(b.status)),
                  h("td", { class: "progress" }, bar(b.counts, b.total)),
                  h("td", {}, time(b.createdAt)),
                ),
              ),
            ),
      );
    } catch (e) {
      fill(list, problem(e));
    }
  };
  fill(main, heading("Batches"), list);
  // A batch not shown yet (a new one) reloads the list, at most every 2 s.
  let reload = null;
  const later = () => {
    reload ??= setTimeout(() => {
      reload = null;
      keepingFocus(list, render);
    }, 2000);
  };
  const stop = listen((e) => {
    if (e.event === "resync") return later();
    if (e.event !== "batch.progress") return;
    const tr = list.querySelector(`tr[data-id="${CSS.escape(e.batchId)}"]`);
    if (!tr) return later();
    fill(tr.querySelector(".state"), status(e.status));
    fill(tr.querySelector(".progress"), bar(e.counts, e.total));
  });
  await render();
  return () => {
    stop();
    clearTimeout(reload);
  };
}

export async function batchPage(main, id) {
  const body = h("div");
  const render = async () => {
    try {
      const [b, members] = await Promise.all([get(`/batches/${id}`), get(`/batches/${id}/ledgers?limit=200`)]);
      fill(
        body,
        h(
          "dl",
          { class: "facts" },
          [
            ["Status", status(b.status)],
            ["Progress", bar(b.counts, b.total)],
            ["Counts", Object.entries(b.counts).map(([k, v]) => `${k} ${v}`).join(" · ")],
            ["Period", b.period],
            ["Type", b.type],
            ["Formats", b.formats.join(", ")],
            ["Merchants", b.merchants || "as listed"],
            ["Created", h("span", {}, time(b.createdAt), ` by ${b.createdBy}`)],
            ["Finished", time(b.finishedAt)],
          ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
        ),
        h("h2", {}, "Ledgers"),
        table(
          "The batch's ledgers",
          ["Ledger", "Merchant", "Format", "Status"],
          members.items.map((l) =>
            h(
              "tr",
              {},
              h("td", {}, h("a", { href: `#/ledgers/${l.id}` }, l.id)),
              h("td", {}, l.merchantId),
              h("td", {}, l.format),
              h("td", {}, status(l.existing ? "EXISTING" : l.status)),
            ),
          ),
        ),
      );
    } catch (e) {
      fill(body, problem(e));
    }
  };
  fill(main, h("p", {}, h("a", { href: "#/batches" }, "← Batches")), heading(`Batch ${id}`), body);
  let pending = null;
  const stop = listen((e) => {
    if ((e.event === "resync" || (e.event === "batch.progress" && e.batchId === id)) && !pending) {
      pending = setTimeout(() => {
        pending = null;
        keepingFocus(body, render);
      }, 500);
    }
  });
  await render();
  return () => {
    stop();
    clearTimeout(pending);
  };
}

export async function scheduleList(main) {
  const list = h("div");
  const notice = h("div");
  const fields = {
    merchantIds: field("Merchants", h("input", { name: "merchantIds", autocomplete: "off" }), "Ids separated by commas, or * for every merchant"),
    type: field("Type", select("type", TYPES)),
    formats: field("Formats", h("input", { name: "formats", value: "PDF, CSV", autocomplete: "off" }), "Separated by commas: CSV, PDF, XLSX"),
    cadence: field("Cadence", select("cadence", CADENCES, "MONTHLY")),
    delay: field("Delay", h("input", { name: "delay", value: "PT1H", autocomplete: "off" }), "How long after each merchant's close (ISO 8601, e.g. PT1H)"),
    from: field("From", h("input", { name: "from", autocomplete: "off" }), "Optional: catch up from this period (e.g. 2026-10)"),
  };
  const form = h("form", { class: "panel", "aria-labelledby": "new-schedule", novalidate: true }, h("h2", { id: "new-schedule" }, "New schedule"), notice, Object.values(fields), h("button", { type: "submit", class: "primary" }, "Create schedule"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    fill(notice);
    for (const f of Object.values(fields)) f.showError(null);
    const body = {
      merchantIds: merchantsOf(fields.merchantIds.control.value),
      type: fields.type.control.value,
      formats: fields.formats.control.value.split(/[\s,]+/).filter(Boolean),
      cadence: fields.cadence.control.value,
      delay: fields.delay.control.value.trim() || undefined,
    };
    if (fields.from.control.value.trim()) body.from = fields.from.control.value.trim();
    try {
      await post("/schedules", body);
      toast("Schedule created");
      render();
    } catch (err) {
      showError(err, fields, notice);
    }
  });
  const render = async () => {
    try {
      const page = await get("/schedules?limit=50");
      fill(
        list,
        page.items.length === 0
          ? h("p", { class: "muted" }, "No schedule yet.")
          : table(
              "Your schedules",
              ["Schedule", "Merchants", "Cadence", "Formats", "Next run", "State", "Actions"],
              page.items.map((s) =>
                h(
                  "tr",
                  {},
                  h("td", {}, s.id),
                  h("td", {}, Array.isArray(s.merchantIds) ? s.merchantIds.join(", ") : s.merchantIds),
                  h("td", {}, `${s.cadence} + ${s.delay}`),
                  h("td", {}, s.formats.join(", ")),
                  h("td", {}, time(s.nextRunAt)),
                  h("td", {}, s.paused ? "paused" : "active"),
                  h(
                    "td",
                    {},
                    h(
                      "button",
                      {
                        type: "button",
                        "aria-label": `${s.paused ? "Resume" : "Pause"} schedule ${s.id}`,
                        onclick: async () => {
                          try {
                            await patch(`/schedules/${s.id}`, { paused: !s.paused });
                            await render();
                            list.querySelector(`button[aria-label="${s.paused ? "Pause" : "Resume"} schedule ${s.id}"]`)?.focus();
                          } catch (err) {
                            fill(notice, problem(err));
                          }
                        },
                      },
                      s.paused ? "Resume" : "Pause",
                    ),
                    " ",
                    h(
                      "button",
                      {
                        type: "button",
                        class: "danger",
                        "aria-label": `Delete schedule ${s.id}`,
                        onclick: async () => {
                          if (!(await confirmAction("Delete schedule?", `No run of schedule ${s.id} opens or grows any more; its ledgers stay.`, "Delete"))) return;
                          try {
                            await del(`/schedules/${s.id}`);
                            await render();
                            main.querySelector("h1")?.focus();
                          } catch (err) {
                            fill(notice, problem(err));
                          }
                        },
                      },
                      "Delete",
                    ),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      fill(list, problem(e));
    }
  };
  fill(main, heading("Schedules"), list, form);
  await render();
}

export async function webhookList(main) {
  const list = h("div");
  const notice = h("div");
  const secret = h("div");
  const events = EVENTS.map((ev) => h("input", { type: "checkbox", name: "events", value: ev, checked: ev !== "batch.completed" }));
  const eventsGroup = h(
    "fieldset",
    { class: "field" },
    h("legend", {}, "Events"),
    events.map((box, i) => {
      box.id = `event-${i}`;
      return h("div", {}, box, " ", h("label", { for: box.id, style: null }, EVENTS[i]));
    }),
  );
  const eventsError = h("div", { class: "error", id: "events-error", role: "alert", hidden: true });
  eventsGroup.append(eventsError);
  eventsGroup.setAttribute("aria-describedby", "events-error");
  const fields = {
    url: field("URL", h("input", { name: "url", type: "url", autocomplete: "off" }), "https; deliveries are signed per Standard Webhooks"),
    merchantIds: field("Merchants", h("input", { name: "merchantIds", autocomplete: "off" }), "Ids separated by commas; empty for every merchant you may read"),
    events: {
      control: events[0],
      showError: (m) => {
        eventsError.textContent = m || "";
        eventsError.hidden = !m;
        if (m) eventsGroup.setAttribute("aria-invalid", "true");
        else eventsGroup.removeAttribute("aria-invalid");
      },
    },
  };
  const form = h("form", { class: "panel", "aria-labelledby": "new-webhook", novalidate: true }, h("h2", { id: "new-webhook" }, "New webhook"), notice, fields.url, eventsGroup, fields.merchantIds, h("button", { type: "submit", class: "primary" }, "Create webhook"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    fill(notice);
    fill(secret);
    fields.url.showError(null);
    fields.merchantIds.showError(null);
    fields.events.showError(null);
    const body = { url: fields.url.control.value.trim(), events: events.filter((b) => b.checked).map((b) => b.value) };
    const m = fields.merchantIds.control.value.trim();
    if (m) body.merchantIds = merchantsOf(m);
    try {
      const created = await post("/webhooks", body);
      fill(secret, secretNotice(created.secret));
      render();
    } catch (err) {
      showError(err, fields, notice);
    }
  });
  const render = async () => {
    try {
      const page = await get("/webhooks?limit=100");
      fill(
        list,
        page.items.length === 0
          ? h("p", { class: "muted" }, "No webhook yet.")
          : table(
              "Your webhooks",
              ["Webhook", "URL", "Events", "Merchants", "State"],
              page.items.map((w) =>
                h(
                  "tr",
                  {},
                  h("td", {}, h("a", { href: `#/webhooks/${w.id}` }, w.id)),
                  h("td", {}, w.url),
                  h("td", {}, w.events.join(", ")),
                  h("td", {}, w.merchantIds ? w.merchantIds.join(", ") : "every merchant you may read"),
                  h("td", {}, w.disabledReason ? status(`DISABLED (${w.disabledReason})`) : w.failingSince ? "failing" : "active"),
                ),
              ),
            ),
      );
    } catch (e) {
      fill(list, problem(e));
    }
  };
  fill(main, heading("Webhooks"), secret, list, form);
  await render();
}

function secretNotice(value) {
  return h(
    "div",
    { class: "notice", role: "status" },
    h("p", {}, "The signing secret — shown this once; keep it where your receiver can read it:"),
    h("pre", { "aria-label": "Signing secret" }, value),
  );
}

export async function webhookPage(main, id) {
  const body = h("div");
  const notice = h("div");
  const secret = h("div");
  const render = async () => {
    try {
      const [w, deliveries] = await Promise.all([get(`/webhooks/${id}`), get(withQuery(`/webhooks/${id}/deliveries`, { limit: "100" }))]);
      fill(
        body,
        h(
          "dl",
          { class: "facts" },
          [
            ["URL", w.url],
            ["Events", w.events.join(", ")],
            ["Merchants", w.merchantIds ? w.merchantIds.join(", ") : "every merchant you may read"],
            ["State", w.disabledReason ? `disabled (${w.disabledReason}) since ${new Date(w.disabledAt).toLocaleString()}` : w.failingSince ? `failing since ${new Date(w.failingSince).toLocaleString()}` : "active"],
            ["Created", h("span", {}, time(w.createdAt), ` by ${w.createdBy}`)],
          ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
        ),
        h(
          "div",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              onclick: async () => {
                if (!(await confirmAction("Rotate the secret?", "A new secret signs every delivery; the old one keeps signing beside it for 24 hours.", "Rotate"))) return;
                try {
                  fill(secret, secretNotice((await post(`/webhooks/${id}/rotate-secret`)).secret));
                } catch (err) {
                  fill(notice, problem(err));
                }
              },
            },
            "Rotate secret",
          ),
          h(
            "button",
            {
              type: "button",
              class: "danger",
              onclick: async () => {
                if (!(await confirmAction("Delete webhook?", "Nothing more is delivered to it.", "Delete"))) return;
                try {
                  await del(`/webhooks/${id}`);
                  location.hash = "#/webhooks";
                } catch (err) {
                  fill(notice, problem(err));
                }
              },
            },
            "Delete",
          ),
        ),
        h("h2", {}, "Deliveries"),
        deliveries.items.length === 0
          ? h("p", { class: "muted" }, "None yet.")
          : table(
              "Deliveries, newest first",
              ["Event", "About", "Status", "Attempts", "Last answer", "Next attempt", "Actions"],
              deliveries.items.map((d) =>
                h(
                  "tr",
                  {},
                  h("td", {}, d.type, h("div", { class: "muted" }, d.messageId)),
                  h("td", {}, d.type.startsWith("ledger.") ? h("a", { href: `#/ledgers/${d.resourceId}` }, d.resourceId) : h("a", { href: `#/batches/${d.resourceId}` }, d.resourceId)),
                  h("td", {}, status(d.status)),
                  h("td", {}, d.attempts),
                  h("td", {}, d.lastHttpStatus ?? "", d.lastError ? h("div", { class: "muted" }, d.lastError) : ""),
                  h("td", {}, time(d.nextAttemptAt)),
                  h(
                    "td",
                    {},
                    h(
                      "button",
                      {
                        type: "button",
                        "aria-label": `Redeliver ${d.messageId} (delivery ${d.id})`,
                        onclick: async () => {
                          try {
                            await post(`/webhooks/${id}/deliveries/${d.id}/redeliver`);
                            toast("Sent again");
                            await keepingFocus(body, render);
                          } catch (err) {
                            fill(notice, problem(err));
                          }
                        },
                      },
                      "Redeliver",
                    ),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      fill(body, problem(e));
    }
  };
  fill(main, h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")), heading(`Webhook ${id}`), secret, notice, body);
  await render();
}
