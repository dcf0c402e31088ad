// Ledgers: the live table with filters and paging, the "New ledger" form, a ledger's page.

import { claims, del, download, get, getText, post, withQuery } from "./api.js";
import { confirmAction, field, fill, h, heading, keepingFocus, problem, select, status, time, toast } from "./ui.js";
import { listen } from "./live.js";

const STATUSES = ["PENDING", "PROCESSING", "COMPLETED", "REJECTED"];
const TYPES = ["STATEMENT", "SUMMARY"];
const FORMATS = ["CSV", "PDF", "XLSX"];

/** The filters of the table, kept while the session lives. */
const filters = { merchantId: "", status: "", type: "", period: "" };

/** Forgets the filters (the session ended: the next user starts afresh). */
export function resetFilters() {
  for (const k of Object.keys(filters)) filters[k] = "";
}

/** A progress bar with its words ("GENERATE: 1,200 rows"), for a running ledger. */
function progressOf(event) {
  const label = `${event.phase}${event.rowsDone ? `: ${event.rowsDone.toLocaleString()} rows` : ""}`;
  const bar = h("progress", { "aria-label": `Progress: ${label}` });
  if (event.rowsTotal) {
    bar.max = event.rowsTotal;
    bar.value = event.rowsDone;
  }
  return h("span", {}, bar, " ", h("span", { class: "muted" }, label));
}

export async function ledgerList(main) {
  const rows = new Map();
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const empty = h("p", { class: "muted", hidden: true }, "No ledger matches.");
  const error = h("div");
  let cursor = null;

  const row = (l) => {
    const tr = h(
      "tr",
      { "data-id": l.id },
      h("td", {}, h("a", { href: `#/ledgers/${l.id}` }, l.id)),
      h("td", {}, l.merchantId),
      h("td", { class: "wide" }, l.type),
      h("td", {}, l.period),
      h("td", { class: "wide" }, l.format),
      h("td", { class: "state" }, status(l.status)),
      h("td", { class: "version wide" }, l.version),
      h("td", { class: "updated wide" }, time(l.updatedAt)),
    );
    rows.set(l.id, tr);
    return tr;
  };

  // One read at a time, in the order asked: a resync never lands under a "Load more" that
  // was asked before it, nor the other way round.
  let queue = Promise.resolve();
  const serially = (f) => (queue = queue.then(f, f));

  const read = async (reset) => {
    fill(error);
    if (reset) {
      rows.clear();
      tbody.replaceChildren();
      cursor = null;
    }
    try {
      const page = await get(withQuery("/ledgers", { ...filters, limit: "50", cursor }));
      for (const l of page.items) if (!rows.has(l.id)) tbody.append(row(l));
      cursor = page.nextCursor;
      more.hidden = !cursor;
      empty.hidden = rows.size > 0;
    } catch (e) {
      fill(error, problem(e));
    }
  };
  const load = (reset) => serially(() => read(reset));

  // After a (re)connection: read again as many ledgers as are shown (what was missed
  // meanwhile changes in place), keeping the pages the user loaded.
  const reread = () =>
    serially(async () => {
      const shown = Math.max(rows.size, 50);
      fill(error);
      try {
        const fresh = [];
        let next = null;
        do {
          const page = await get(withQuery("/ledgers", { ...filters, limit: String(Math.min(200, shown - fresh.length)), cursor: next }));
          fresh.push(...page.items);
          next = page.nextCursor;
        } while (next && fresh.length < shown);
        rows.clear();
        tbody.replaceChildren(...fresh.map(row));
        cursor = next;
        more.hidden = !cursor;
        empty.hidden = rows.size > 0;
      } catch (e) {
        fill(error, problem(e));
      }
    });

  const merchant = field("Merchant", h("input", { name: "merchantId", value: filters.merchantId, placeholder: "any" }));
  const state = field("Status", select("status", [["", "any"], ...STATUSES], filters.status));
  const type = field("Type", select("type", [["", "any"], ...TYPES], filters.type));
  const period = field("Period", h("input", { name: "period", value: filters.period, placeholder: "any", size: 10 }));
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter ledgers" },
    merchant,
    state,
    type,
    period,
    h("button", { type: "submit" }, "Apply filters"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    filters.merchantId = merchant.control.value.trim();
    filters.status = state.control.value;
    filters.type = type.control.value;
    filters.period = period.control.value.trim();
    load(true);
  });
  more.addEventListener("click", () => load(false));

  fill(
    main,
    heading("Ledgers"),
    h("div", { class: "actions" }, h("a", { class: "button primary", href: "#/new" }, "New ledger")),
    form,
    error,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "aria-label": "Ledgers, newest first" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            [["Ledger"], ["Merchant"], ["Type", "wide"], ["Period"], ["Format", "wide"], ["Status"], ["Version", "wide"]].map(([t, c]) =>
              h("th", { scope: "col", class: c }, t),
            ),
            h("th", { scope: "col", class: "wide" }, "Updated"),
          ),
        ),
        tbody,
      ),
    ),
    empty,
    more,
  );
  // Live: a new ledger appears on top, statuses and progress change in place.
  const matches = (l) =>
    (!filters.merchantId || l.merchantId === filters.merchantId) &&
    (!filters.status || l.status === filters.status) &&
    (!filters.type || l.type === filters.type) &&
    (!filters.period || l.period.toUpperCase() === filters.period.toUpperCase());
  // Ids grow with creation time: only a ledger newer than the newest shown goes on top.
  const newest = () => {
    const first = tbody.firstElementChild;
    return first ? BigInt(first.dataset.id) : 0n;
  };
  const stop = listen(async (e) => {
    if (e.event === "resync") {
      reread();
      return;
    }
    if (e.event === "ledger.status") {
      const tr = rows.get(e.ledgerId);
      if (tr) {
        fill(tr.querySelector(".state"), status(e.status));
        fill(tr.querySelector(".version"), e.version);
        fill(tr.querySelector(".updated"), time(e.at));
        return;
      }
      // A new ledger announces itself PENDING; older ones paged out stay out.
      if (e.status !== "PENDING" || BigInt(e.ledgerId) <= newest()) return;
      try {
        const l = await get(`/ledgers/${e.ledgerId}`);
        if (!rows.has(l.id) && matches(l)) {
          const fresh = row(l);
          fresh.classList.add("fresh");
          tbody.prepend(fresh);
          empty.hidden = true;
        }
      } catch {
        /* gone or not visible */
      }
    } else if (e.event === "ledger.progress") {
      const tr = rows.get(e.ledgerId);
      if (tr) fill(tr.querySelector(".state"), status("PROCESSING"), " ", progressOf(e));
    }
  });
  await load(true);
  return stop;
}

/** The fields of the API's validation errors, and the form fields showing them. */
const FIELD_OF = { merchantId: "merchant", type: "type", period: "period", format: "format", timezone: "timezone" };

export async function newLedger(main) {
  const fields = {
    merchant: field("Merchant", h("input", { name: "merchantId", required: true, autocomplete: "off" }), "A merchant id, e.g. m_acme"),
    type: field("Type", select("type", TYPES)),
    period: field(
      "Period",
      h("input", { name: "period", required: true, autocomplete: "off" }),
      "2026 · 2026-Q3 · 2026-10 · 2026-W40 · 2026-10-15",
    ),
    format: field("Format", select("format", FORMATS)),
    timezone: field(
      "Time zone",
      h("input", { name: "timezone", autocomplete: "off" }),
      "Optional: an IANA zone such as Europe/Berlin; empty means the merchant's own",
    ),
  };
  const notice = h("div");
  const button = h("button", { type: "submit", class: "primary" }, "Create ledger");
  const form = h("form", { "aria-labelledby": "new-title", novalidate: true }, notice, Object.values(fields), button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    fill(notice);
    for (const f of Object.values(fields)) f.showError(null);
    const body = {
      merchantId: fields.merchant.control.value.trim(),
      type: fields.type.control.value,
      period: fields.period.control.value.trim(),
      format: fields.format.control.value,
    };
    const zone = fields.timezone.control.value.trim();
    if (zone) body.timezone = zone;
    button.disabled = true;
    try {
      const created = await post("/ledgers", body);
      toast(`Ledger ${created.id} created`);
      location.hash = `#/ledgers/${created.id}`;
    } catch (err) {
      const target = err.field && fields[FIELD_OF[err.field]];
      if (target) {
        target.showError(err.message);
        target.control.focus();
      } else if (err.code === "LEDGER_EXISTS" && err.body?.error?.ledgerId) {
        const id = err.body.error.ledgerId;
        fill(notice, h("div", { class: "notice bad", role: "alert" }, err.message, " — ", h("a", { href: `#/ledgers/${id}` }, `open ledger ${id}`)));
      } else {
        fill(notice, problem(err));
      }
    } finally {
      button.disabled = false;
    }
  });
  const title = heading("New ledger");
  title.id = "new-title";
  fill(main, h("p", {}, h("a", { href: "#/ledgers" }, "← Ledgers")), title, form);
}

export async function ledgerPage(main, id) {
  const progress = h("span");
  const body = h("div");
  let reads = 0;
  let manifestOpen = false;
  const render = async () => {
    // Reads may overlap (a burst of events): only the newest one is shown.
    const mine = ++reads;
    let l, timeline;
    try {
      [l, timeline] = await Promise.all([get(`/ledgers/${id}`), get(`/ledgers/${id}/events`)]);
    } catch (e) {
      if (mine === reads) fill(body, problem(e));
      return;
    }
    if (mine !== reads) return;
    const actions = h("div", { class: "actions" });
    const act = (label, verb, run, danger) =>
      h(
        "button",
        {
          type: "button",
          class: danger ? "danger" : "",
          onclick: async () => {
            if (!(await confirmAction(`${label}?`, `${label} ledger ${l.id} (${l.merchantId}, ${l.period}, ${l.format}).`, verb))) return;
            try {
              await run();
              toast(`${label}: done`);
              if (label === "Delete") location.hash = "#/ledgers";
              else keepingFocus(body, render);
            } catch (e) {
              fill(actionProblem, problem(e));
            }
          },
        },
        label,
      );
    const actionProblem = h("div");
    if (l.status === "REJECTED") actions.append(act("Retry", "Retry", () => post(`/ledgers/${id}/retry`)));
    if (l.status === "COMPLETED" && l.stage === "DRAFT")
      actions.append(act("Regenerate", "Regenerate", () => post(`/ledgers/${id}/regenerate`)));
    if (!l.deletedAt && l.status !== "PROCESSING") actions.append(act("Delete", "Delete", () => del(`/ledgers/${id}`), true));

    const files = h("div", { class: "actions" });
    if (l.file) {
      for (let v = l.file.version; v >= 1; v--) {
        files.append(
          h(
            "button",
            {
              type: "button",
              onclick: async () => {
                try {
                  toast(`Saved ${await download(`/ledgers/${id}/download?version=${v}`)}`);
                } catch (e) {
                  fill(actionProblem, problem(e));
                }
              },
            },
            `Download version ${v}`,
          ),
        );
      }
    }
    const manifest = h("div");
    const showManifest = h("button", { type: "button" }, "Show manifest");
    const openManifest = async () => {
      manifestOpen = true;
      try {
        const jws = await getText(`/ledgers/${id}/manifest?version=${l.file.version}`);
        const claimsOf = claims(jws) || {};
        fill(
          manifest,
          h("p", {}, `The signed statement of version ${l.file.version} (ES256 JWS; verify it with `, h("code", {}, "ledger verify"), " or any JOSE library):"),
          h("pre", { "aria-label": "Manifest claims" }, JSON.stringify(claimsOf, null, 2)),
          h("details", {}, h("summary", {}, "Compact JWS"), h("pre", {}, jws)),
        );
      } catch (e) {
        fill(manifest, problem(e));
      }
    };
    showManifest.addEventListener("click", openManifest);
    if (manifestOpen && l.file) openManifest();

    const failure = l.failureReason;
    fill(
      body,
      h(
        "dl",
        { class: "facts" },
        [
          ["Merchant", l.merchantId],
          ["Type", l.type],
          ["Period", l.period],
          ["Time zone", l.timezone || "the merchant's own (known once generated)"],
          ["Format", l.format],
          ["Stage", l.stage],
          ["Status", h("span", {}, status(l.status), " ", l.status === "PROCESSING" ? progress : "")],
          ["Version", l.version],
          ["Attempts", l.attemptCount],
          ["Failure", failure ? `${failure.errorCode}: ${failure.message}` : "—"],
          ["File", l.file ? `${l.file.fileName} · ${l.file.sizeBytes.toLocaleString()} bytes · SHA-256 ${l.file.sha256}` : "—"],
          ["Created", h("span", {}, time(l.createdAt), ` by ${l.createdBy}`)],
          ["Updated", time(l.updatedAt)],
          ["Completed", time(l.completedAt)],
        ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
      ),
      actions,
      actionProblem,
      l.file ? [h("h2", {}, "Files"), files, showManifest, manifest] : null,
      h("h2", {}, "Timeline"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "aria-label": "Timeline, oldest first" },
          h("thead", {}, h("tr", {}, ["When", "Attempt", "What", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            timeline.items.map((t) =>
              h(
                "tr",
                {},
                h("td", {}, time(t.at)),
                h("td", {}, t.attempt),
                h("td", {}, t.status ? status(t.status) : t.phase),
                h("td", {}, t.errorCode || t.detail || ""),
              ),
            ),
          ),
        ),
      ),
    );
  };
  fill(main, h("p", {}, h("a", { href: "#/ledgers" }, "← Ledgers")), heading(`Ledger ${id}`), body);
  // Listening before the first read: a change between the two is not missed.
  const stop = listen((e) => {
    if (e.event === "resync" || (e.event === "ledger.status" && e.ledgerId === id)) keepingFocus(body, render);
    else if (e.event === "ledger.progress" && e.ledgerId === id) fill(progress, progressOf(e));
  });
  await render();
  return stop;
}
