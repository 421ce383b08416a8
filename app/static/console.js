/* Paycast operator console: plain JavaScript, no build step.
 *
 * Every number and row comes from the public HTTP API with the operator's API
 * key (merchant-scoped); the operations page also uses the admin token. Both
 * live in this tab's sessionStorage only. The URL names the view, so every
 * page (a payment, a search, a list) can be shared as a link.
 */
"use strict";
(() => {
  const STATUSES = ["requires_confirmation", "processing", "requires_action", "requires_capture", "succeeded",
    "failed", "canceled"];
  const STATUS_COLOURS = { succeeded: "#2f7d3a", failed: "#c92a2a", processing: "#b35c00",
    requires_action: "#9c36b5", requires_capture: "#1864ab", canceled: "#495057", requires_confirmation: "#868e96" };
  const CONNECTOR_COLOURS = ["#3b5bdb", "#d6336c", "#0c8599", "#e8590c", "#7048e8", "#5c940d"];
  const LIST_TITLES = {
    processing_overdue: "Payments processing past their deadline",
    review_required: "Payments that need review",
    deliveries_failing: "Outgoing webhook deliveries failing",
    realtime_connections: "Realtime connections",
  };
  const POLL_MS = 700, REFRESH_MS = 5000;
  const PAYMENT_HEADERS = ["Payment", "Status", "Amount", { label: "Customer", cls: "hide-sm" }, "Connector",
    { label: "Updated", cls: "hide-sm" }];
  const $ = (sel, root = document) => root.querySelector(sel);
  const main = $("#main");
  const exposed = window.paycastConsole = { charts: {}, overview: null, stats: null, inbox: {} };
  let apiKey = sessionStorage.getItem("paycast.key");
  let adminToken = sessionStorage.getItem("paycast.admin");
  let generation = 0;

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  /** fetch JSON from the API; `admin` uses the admin token instead of the API key. */
  async function api(path, { admin = false, method = "GET" } = {}) {
    const token = admin ? adminToken : apiKey;
    const response = await fetch(path, { method, headers: { Authorization: "Bearer " + (token || "") } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) {
      throw new ApiError(401, admin ? "That admin token was not accepted." : "That API key was not accepted.");
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : "HTTP " + response.status;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  /** Build an element: el("a", {href: "/x", class: "y"}, "text", child…). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const badge = (status) => el("span", { class: "badge status-" + status }, String(status).replace(/_/g, " "));
  const code = (text) => text ? el("code", {}, text) : "—";
  const payLink = (id) => el("a", { href: "/dashboard/payments/" + encodeURIComponent(id) }, id);
  const time = (iso) => iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—";
  const preciseTime = (iso) => iso ? iso.replace("T", " ") : "—";
  const pct = (x) => x == null ? "—" : (x * 100).toFixed(1) + " %";
  const ms = (x) => x == null ? "—" : (x < 10 ? x.toFixed(2) : x.toFixed(0)) + " ms";

  function money(amount, currency) {
    try {  // amounts are in minor units: the currency says how many there are
      const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
      return format.format(amount / 10 ** format.resolvedOptions().maximumFractionDigits);
    } catch (e) { return amount + " " + currency; }
  }

  function setState(text, cls) {
    const node = $("#state");
    node.textContent = text;
    node.className = cls || "";
  }

  function panel(title, ...children) {
    const id = "h-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
    return el("section", { class: "panel", "aria-labelledby": id }, el("h2", { id }, title), ...children);
  }

  /** A table inside a keyboard-scrollable region (narrow screens scroll it sideways). */
  function table(label, headers, rows, attrs) {
    const head = el("tr", {}, headers.map((h) => el("th", { scope: "col",
      class: [h.num ? "num" : "", h.cls || ""].join(" ").trim() || null }, h.label || h)));
    return el("div", { class: "scroll", role: "region", "aria-label": label, tabindex: "0" },
      el("table", attrs || {}, el("thead", {}, head), el("tbody", {}, rows)));
  }

  const sleep = (msec) => new Promise((resolve) => setTimeout(resolve, msec));

  // ------------------------------------------------------------------ charts

  function chartWidth(node) { return Math.max(260, node.clientWidth || 600); }

  function makeChart(node, title, series, data, yFormat, yRange) {
    node.textContent = "";
    const opts = {
      title, width: chartWidth(node), height: 240,
      scales: { x: { time: true }, y: yRange ? { range: yRange } : { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [{ stroke: "#4d5563" }, { stroke: "#4d5563", values: (u, vals) => vals.map(yFormat), size: 56 }],
      series: [{ label: "Minute", value: (u, v) => v == null ? "—" : new Date(v * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }, ...series],
      legend: { live: true },
    };
    const plot = new uPlot(opts, data, node);
    new ResizeObserver(() => plot.setSize({ width: chartWidth(node), height: 240 })).observe(node);
    return plot;
  }

  function describe(node, text) { node.setAttribute("aria-label", text); }

  /** Stacked bars: series k is drawn as the sum of series 0..k, tallest first so each shows on top of the next. */
  function stacked(outcomes, stats) {
    const sums = [];
    let run = stats.buckets.map(() => 0);
    for (const s of outcomes) { run = run.map((v, i) => v + stats.payments[s][i]); sums.push(run); }
    return sums.reverse();
  }

  function renderCharts(stats) {
    exposed.stats = stats;
    const xs = stats.buckets;
    const paymentsNode = $("#chart-payments"), rateNode = $("#chart-success");
    const outcomes = STATUSES.filter((s) => stats.totals[s]);
    const drawn = outcomes.slice().reverse();  // top of the stack first
    const pData = [xs, ...stacked(outcomes, stats)];
    const rateData = [xs, ...stats.connectors.map((c) => c.success_rate.map((r) => r == null ? null : r * 100))];
    const totalText = outcomes.map((s) => s.replace(/_/g, " ") + " " + stats.totals[s]).join(", ") || "none";
    describe(paymentsNode, "Payments per minute by outcome, last hour. Totals: " + totalText + ".");
    describe(rateNode, "Success rate per connector per minute, last hour: " + (stats.connectors.length
      ? stats.connectors.map((c) => c.name + " " + pct(c.success_rate_total)).join(", ") : "no attempts") + ".");
    const pChart = exposed.charts.payments, rChart = exposed.charts.successRate;
    const same = (chart, labels) => chart && chart.series.length - 1 === labels.length
      && labels.every((label, i) => chart.series[i + 1].label === label);
    const bars = uPlot.paths.bars({ size: [0.8, 24] });
    if (same(pChart, drawn.map((s) => s.replace(/_/g, " ")))) pChart.setData(pData);
    else exposed.charts.payments = makeChart(paymentsNode, "", drawn.map((s) => ({
      label: s.replace(/_/g, " "), stroke: STATUS_COLOURS[s], fill: STATUS_COLOURS[s], width: 0, paths: bars,
      points: { show: false },
      // The legend shows each outcome's own count, not the stacked height.
      value: (u, v, si, i) => i == null ? "—" : exposed.stats.payments[s][i] })), pData, (v) => v);
    if (same(rChart, stats.connectors.map((c) => c.name))) rChart.setData(rateData);
    else exposed.charts.successRate = makeChart(rateNode, "", stats.connectors.map((c, i) => ({
      label: c.name, stroke: CONNECTOR_COLOURS[i % CONNECTOR_COLOURS.length], width: 2, spanGaps: false,
      points: { show: true, size: 6 }, value: (u, v) => v == null ? "—" : v.toFixed(0) + " %" })),
      rateData, (v) => v + " %", [0, 100]);
  }

  // ---------------------------------------------------------------- overview

  function stat(counter, label, href) {
    return el("a", { class: "stat", href, dataset: { counter } },
      el("span", { class: "label" }, label), el("span", { class: "value" }, "…"));
  }

  function setStat(counter, value, alertWhenPositive = true) {
    const card = document.querySelector(`[data-counter="${counter}"]`);
    card.querySelector(".value").textContent = value;
    card.classList.toggle("alert", alertWhenPositive && value !== "0" && value !== 0);
    card.classList.remove("locked");
  }

  function renderOverview() {
    main.replaceChildren(
      el("h1", {}, "Overview"),
      el("div", { class: "grid cards", id: "counters" },
        stat("processing_overdue", "Processing past deadline", "/dashboard/lists/processing_overdue"),
        stat("review_required", "Review required", "/dashboard/lists/review_required"),
        stat("inbox_dead", "Inbox dead letters", "/dashboard/admin?status=dead"),
        stat("inbox_unmatched", "Inbox unmatched", "/dashboard/admin?status=unmatched"),
        stat("deliveries_failing", "Outgoing deliveries failing", "/dashboard/lists/deliveries_failing"),
        stat("realtime_connections", "Realtime connections", "/dashboard/lists/realtime_connections")),
      el("div", { class: "grid two" },
        panel("Payments per minute by outcome", el("p", { class: "sub" }, "Last hour, by creation minute and current status."),
          el("div", { class: "chart", id: "chart-payments", role: "img" })),
        panel("Success rate per connector", el("p", { class: "sub" }, "Settled attempts per minute that charged or authorised."),
          el("div", { class: "chart", id: "chart-success", role: "img" }))),
      panel("Connector health",
        el("p", { class: "sub" }, "Circuit breaker state now; attempts, success rate and latency over the last hour."),
        table("Connector health", ["Connector", "Breaker", { label: "Attempts", num: true },
          { label: "Success rate", num: true }, { label: "p50 latency", num: true }, { label: "p99 latency", num: true }],
        [], { id: "connectors" })),
      panel("Live payments", el("div", { id: "counts" }),
        table("Live payments", PAYMENT_HEADERS, [], { id: "payments" })),
    );
    const cards = document.querySelectorAll("[data-counter^=inbox_]");
    for (const card of cards) {
      card.classList.add("locked");
      card.querySelector(".value").textContent = adminToken ? "…" : "Admin token needed";
    }
  }

  async function refreshOverview(mine) {
    const [overview, stats] = await Promise.all([api("/v1/stats/overview"), api("/v1/stats/payments?window=1h")]);
    if (mine !== generation) return;
    exposed.overview = overview;
    for (const counter of ["processing_overdue", "review_required", "deliveries_failing"]) setStat(counter, overview[counter]);
    setStat("realtime_connections", overview.realtime_connections, false);
    $("#connectors tbody").replaceChildren(...overview.connectors.map((c) => el("tr", { dataset: { connector: c.name } },
      el("th", { scope: "row" }, c.name), el("td", {}, c.state ? badge(c.state) : "—"),
      el("td", { class: "num" }, c.attempts), el("td", { class: "num" }, pct(c.success_rate)),
      el("td", { class: "num p50" }, ms(c.latency_ms_p50)), el("td", { class: "num p99" }, ms(c.latency_ms_p99)))));
    renderCharts(stats);
    if (adminToken) await refreshInboxCounters(mine);
  }

  async function inboxCount(status) {
    const page = await api("/admin/inbox?limit=100&status=" + status, { admin: true });
    return page.data.length + (page.has_more ? "+" : "");
  }

  async function refreshInboxCounters(mine) {
    try {
      const [dead, unmatched] = await Promise.all([inboxCount("dead"), inboxCount("unmatched")]);
      if (mine !== generation) return;
      setStat("inbox_dead", dead);
      setStat("inbox_unmatched", unmatched);
    } catch (e) {
      for (const counter of ["inbox_dead", "inbox_unmatched"]) {
        const card = document.querySelector(`[data-counter="${counter}"]`);
        card.classList.add("locked");
        card.querySelector(".value").textContent = e.status === 404 ? "Not available" : e.message;
      }
    }
  }

  // The live payments table: the 100 newest payments, then the event log
  // (GET /v1/events?after_seq=, gap-free per merchant) so nothing is missed.
  const payments = new Map();

  function paymentRow(p) {
    return el("tr", { dataset: { id: p.id } },
      el("td", { class: "id" }, payLink(p.id)),
      el("td", { class: "status", dataset: { status: p.status } }, badge(p.status)),
      el("td", { class: "amount" }, money(p.amount, p.currency)),
      el("td", { class: "customer hide-sm" }, p.customer_id || "—"),
      el("td", { class: "connector" }, p.connector || "—"),
      el("td", { class: "updated hide-sm" }, time(p.updated_at || p.created_at)));
  }

  function upsert(p, flash) {
    const known = payments.get(p.id);
    if (known && (known.updated_at || "") > (p.updated_at || "")) return;  // never go back in time
    payments.set(p.id, p);
    const tbody = $("#payments tbody");
    const row = paymentRow(p);
    const old = tbody.querySelector('tr[data-id="' + CSS.escape(p.id) + '"]');
    if (old) old.replaceWith(row); else tbody.insertBefore(row, tbody.firstChild);
    if (flash) row.classList.add("flash");
  }

  function renderCounts() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const p of payments.values()) counts[p.status] = (counts[p.status] || 0) + 1;
    $("#counts").replaceChildren(...STATUSES.map((s) => el("span", { class: "count status-" + s, dataset: { status: s } },
      s.replace(/_/g, " "), el("span", { class: "n" }, counts[s]))));
  }

  async function overviewView(mine) {
    renderOverview();
    payments.clear();
    const latest = await api("/v1/events?limit=1");
    let afterSeq = latest.data.length ? latest.data[0].seq : 0;
    const page = await api("/v1/payments?limit=100");
    for (const p of page.data.slice().reverse()) upsert(p, false);
    renderCounts();
    await refreshOverview(mine);
    let refreshed = Date.now();
    while (mine === generation) {
      try {
        const events = await api("/v1/events?type=payment.*&limit=100&after_seq=" + afterSeq);
        for (const event of events.data) { upsert(event.data.object, true); afterSeq = event.seq; }
        if (events.data.length) renderCounts();
        if (Date.now() - refreshed > REFRESH_MS) { refreshed = Date.now(); await refreshOverview(mine); }
        setState("Live · " + payments.size + " payments · event seq " + afterSeq, "live");
        if (events.has_more) continue;
      } catch (e) {
        if (e.status === 401) throw e;
        setState("Reconnecting… (" + e.message + ")", "error");
      }
      await sleep(POLL_MS);
    }
  }

  // ----------------------------------------------------------- payment page

  /** One delivery try: its HTTP status, or why there was none. */
  const tryResult = (a) => a.status_code != null ? "HTTP " + a.status_code
    : "no response" + (a.error ? " (" + a.error.split(":")[0] + ")" : "");

  function describeEntry(entry) {
    const d = entry.data;
    switch (entry.type) {
      case "attempt":
        return { what: [el("span", { class: "kind" }, "attempt"), d.connector, " ", badge(d.status)],
          detail: [d.latency_ms != null ? ms(d.latency_ms) : "latency not recorded",
            d.error_code ? " · " + d.error_code : "", d.connector_txn_id ? " · " + d.connector_txn_id : "",
            // Its status is the current one: say when it last changed (e.g. settled by a webhook).
            d.updated_at && d.updated_at !== d.created_at ? " · status since " + preciseTime(d.updated_at) : ""].join("") };
      case "webhook_in":
        return { what: [el("span", { class: "kind" }, "webhook in"), d.connector + " " + d.event_type, " ", badge(d.status)],
          detail: d.event_id + (d.last_error ? " · " + d.last_error : "") };
      case "event":
        return { what: [el("span", { class: "kind" }, "event"), d.type], detail: "seq " + d.seq + " · " + d.id };
      case "delivery":
        return { what: [el("span", { class: "kind" }, "webhook out"), d.event_type, " ", badge(d.status)],
          detail: d.attempts.length ? d.attempts.length + (d.attempts.length === 1 ? " try: " : " tries: ")
            + d.attempts.map(tryResult).join(", ") : "not attempted yet" };
      case "refund":
        return { what: [el("span", { class: "kind" }, "refund"), money(d.amount, d.currency), " ", badge(d.status)], detail: d.id };
      case "dispute":
        return { what: [el("span", { class: "kind" }, "dispute"), money(d.amount, d.currency), " ", badge(d.status)], detail: d.id };
      default:
        return { what: [entry.type], detail: "" };
    }
  }

  function renderPayment(t) {
    const p = t.payment;
    const by = (type) => t.entries.filter((e) => e.type === type).map((e) => e.data);
    const method = p.payment_method.card ? "card ····" + (p.payment_method.card.last4 || "")
      : p.payment_method.upi ? "upi " + p.payment_method.upi.vpa : p.payment_method.type;
    const searchLink = (v) => v ? el("a", { href: "/dashboard/search?q=" + encodeURIComponent(v) }, v) : "—";
    const fact = (label, value) => el("div", {}, el("dt", {}, label), el("dd", {}, value));
    const attempts = by("attempt"), inbox = by("webhook_in"), deliveries = by("delivery");
    const money2 = (amount) => money(amount, p.currency);
    main.replaceChildren(
      el("div", { class: "title" }, el("h1", {}, "Payment ", el("code", {}, p.id)), badge(p.status),
        p.review_required ? el("span", { class: "badge status-failed" }, "review required") : null),
      el("section", { class: "panel", "aria-label": "Summary" }, el("dl", { class: "facts" },
        fact("Amount", money2(p.amount)), fact("Received", money2(p.amount_received)),
        fact("Refunded", money2(p.amount_refunded)), fact("Capture", p.capture_method),
        fact("Customer", searchLink(p.customer_id)), fact("Order", searchLink(p.order_id)),
        fact("Connector", p.connector || "—"), fact("Method", method),
        fact("Created", time(p.created_at)), fact("Updated", time(p.updated_at)),
        fact("Last error", p.last_error ? p.last_error.code || p.last_error.message : "—"),
        fact("Next action", p.next_action ? p.next_action.type : "—"),
        fact("Canceled because", p.cancellation_reason || "—"),
        fact("Attempts", String(attempts.length)))),
      el("div", { class: "grid two payment-grid" },
        panel("Timeline", el("ol", { class: "timeline", id: "timeline" }, t.entries.map((entry) => {
          const { what, detail } = describeEntry(entry);
          return el("li", { class: "t-" + entry.type, dataset: { type: entry.type } },
            el("time", { datetime: entry.at }, preciseTime(entry.at)), el("div", { class: "what" }, what),
            detail ? el("div", { class: "detail" }, detail) : null);
        }))),
        el("div", {},
          panel("Attempts", table("Attempts", ["Connector", "Status", { label: "Latency", num: true }, "Error", "Transaction"],
            attempts.map((a) => el("tr", { dataset: { id: a.id, connector: a.connector } }, el("td", {}, a.connector),
              el("td", {}, badge(a.status)), el("td", { class: "num" }, ms(a.latency_ms)), el("td", {}, a.error_code || "—"),
              el("td", {}, code(a.connector_txn_id)))), { id: "attempts" })),
          panel("Gateway webhooks received", inbox.length ? table("Gateway webhooks received",
            ["Connector", "Event", "Status", "Received"], inbox.map((w) => el("tr", { dataset: { id: w.id, connector: w.connector } },
              el("td", {}, w.connector), el("td", {}, w.event_type, el("br"), code(w.event_id)), el("td", {}, badge(w.status)),
              el("td", {}, time(w.received_at)))), { id: "webhooks-in" })
            : el("p", { class: "empty", id: "webhooks-in" }, "None received.")),
          panel("Outgoing webhook deliveries", deliveries.length ? table("Outgoing webhook deliveries",
            ["Event", "Status", { label: "Tries", num: true }, "Results"],
            deliveries.map((d) => el("tr", { dataset: { id: d.id } }, el("td", {}, d.event_type), el("td", {}, badge(d.status)),
              el("td", { class: "num" }, d.attempt_count),
              el("td", { title: d.last_error || null }, d.attempts.map(tryResult).join(", ") || "—"))), { id: "deliveries" })
            : el("p", { class: "empty", id: "deliveries" }, "No webhook endpoint received this payment's events.")),
          panel("Refunds and disputes", (by("refund").length + by("dispute").length) ? table("Refunds and disputes",
            ["Object", "Amount", "Status", "Created"], [...by("refund"), ...by("dispute")].map((r) => el("tr", {},
              el("td", {}, r.object, el("br"), code(r.id)), el("td", { class: "amount" }, money(r.amount, r.currency)),
              el("td", {}, badge(r.status)), el("td", {}, time(r.created_at)))))
            : el("p", { class: "empty" }, "None.")))),
    );
  }

  async function paymentView(mine, id) {
    document.title = id + " · Paycast console";
    while (mine === generation) {
      try {
        const t = await api("/v1/payments/" + encodeURIComponent(id) + "/timeline");
        if (mine !== generation) return;
        const focused = document.activeElement && document.activeElement.id;
        renderPayment(t);
        if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
        setState("Live · payment " + t.payment.status, "live");
      } catch (e) {
        if (e.status === 404) {
          main.replaceChildren(el("h1", {}, "No such payment"), el("p", {}, `There is no payment ${id} for this API key.`));
          setState("Connected", "live");
          return;
        }
        throw e;
      }
      await sleep(REFRESH_MS);
    }
  }

  // ------------------------------------------------------------ search, lists

  async function searchView(mine) {
    const q = new URLSearchParams(location.search).get("q") || "";
    const input = el("input", { id: "search-q", name: "q", type: "search", value: q, autocomplete: "off",
      placeholder: "Payment, order, customer, connector transaction, refund or dispute id" });
    const results = el("div", { id: "results" });
    main.replaceChildren(el("h1", {}, "Search"), panel("Find payments",
      el("form", { class: "row", role: "search", action: "/dashboard/search", method: "get" },
        el("label", { for: "search-q", class: "visually-hidden" }, "Search term"), input,
        el("button", { type: "submit" }, "Search")), results));
    $("#quick-q").value = q;
    if (!q) { setState("Connected", "live"); return; }
    const found = await api("/v1/search?limit=100&q=" + encodeURIComponent(q));
    if (mine !== generation) return;
    if (found.data.length === 1 && found.data[0].matched_on === "payment_id") {
      location.replace("/dashboard/payments/" + encodeURIComponent(found.data[0].id));  // an exact payment id: go there
      return;
    }
    results.replaceChildren(found.data.length ? table("Search results",
      ["Payment", "Matched on", "Status", "Amount", "Customer", "Order", "Created"],
      found.data.map((p) => el("tr", { dataset: { id: p.id } }, el("td", {}, payLink(p.id)), el("td", {}, p.matched_on.replace(/_/g, " ")),
        el("td", {}, badge(p.status)), el("td", { class: "amount" }, money(p.amount, p.currency)),
        el("td", {}, p.customer_id || "—"), el("td", {}, p.order_id || "—"), el("td", {}, time(p.created_at)))))
      : el("p", { class: "empty" }, `Nothing matches “${q}”.`));
    setState(found.data.length + (found.has_more ? "+" : "") + " payments found", "live");
  }

  function listRows(name, items) {
    if (name === "deliveries_failing") {
      return table(LIST_TITLES[name], ["Event", "Status", { label: "Tries", num: true }, "Last result",
        { label: "Next try", cls: "hide-sm" }],
        items.map((d) => el("tr", { dataset: { id: d.id } },
          el("td", {}, d.event_type, el("div", { class: "detail" }, code(d.event_id)), el("div", { class: "detail" }, code(d.id))),
          el("td", {}, badge(d.status)), el("td", { class: "num" }, d.attempt_count),
          el("td", { title: d.last_error || null }, d.attempts.length ? tryResult(d.attempts[d.attempts.length - 1]) : "—"),
          el("td", { class: "hide-sm" }, time(d.next_attempt_at)))), { id: "list" });
    }
    if (name === "realtime_connections") {
      return table(LIST_TITLES[name], ["Connection", "Client", "Device", "Connected", "Seen"],
        items.map((c) => el("tr", { dataset: { id: c.id } }, el("td", {}, code(c.id)), el("td", {}, c.client_id),
          el("td", {}, c.device_id || "—"), el("td", {}, time(c.connected_at)), el("td", {}, time(c.seen_at)))), { id: "list" });
    }
    return table(LIST_TITLES[name], PAYMENT_HEADERS, items.map(paymentRow), { id: "list" });
  }

  async function listView(mine, name) {
    const title = LIST_TITLES[name] || name;
    main.replaceChildren(el("h1", {}, title), el("p", {}, el("a", { href: "/dashboard" }, "← Overview")));
    const page = await api("/v1/stats/lists/" + encodeURIComponent(name) + "?limit=100");
    if (mine !== generation) return;
    main.appendChild(panel(page.data.length + (page.has_more ? "+" : "") + " found",
      page.data.length ? listRows(name, page.data) : el("p", { class: "empty" }, "Nothing here right now.")));
    setState("Connected", "live");
  }

  // ------------------------------------------------------ operations (admin)

  async function adminView(mine) {
    const params = new URLSearchParams(location.search);
    const status = params.get("status") || "";
    const tokenInput = el("input", { id: "admin-token", type: "password", autocomplete: "off", placeholder: "PAYCAST_ADMIN_TOKEN" });
    const filter = el("select", { id: "inbox-status", name: "status" },
      ["", "pending", "applied", "ignored", "unmatched", "dead"].map((s) => el("option", { value: s, selected: s === status }, s || "all")));
    const inboxBox = el("div", { id: "inbox-box" });
    const tree = el("pre", { class: "tree", id: "tasks", tabindex: "0", "aria-label": "Live task tree" }, "…");
    main.replaceChildren(el("h1", {}, "Operations"),
      panel("Admin token", el("form", { class: "row", id: "admin-form",
        onsubmit: (e) => { e.preventDefault(); sessionStorage.setItem("paycast.admin", tokenInput.value.trim()); location.reload(); } },
        el("label", { for: "admin-token" }, "Admin token"), tokenInput, el("button", { type: "submit", id: "admin-connect" }, "Use"))),
      panel("Gateway webhook inbox", el("form", { class: "row", action: "/dashboard/admin", method: "get" },
        el("label", { for: "inbox-status" }, "Status"), filter, el("button", { type: "submit", class: "secondary" }, "Filter")), inboxBox),
      panel("Live task tree", tree));
    if (!adminToken) {
      inboxBox.replaceChildren(el("p", { class: "notice" }, "Enter the admin token to see the inbox and the task tree."));
      tree.textContent = "—";
      return;
    }
    tokenInput.value = adminToken;
    try {
      const page = await api("/admin/inbox?limit=100" + (status ? "&status=" + encodeURIComponent(status) : ""), { admin: true });
      exposed.inbox = page;
      inboxBox.replaceChildren(page.data.length ? table("Gateway webhook inbox",
        ["Received", "Event", "Status", { label: "Tries", num: true }, "Payment", { label: "Action", cls: "visually-hidden" }],
        page.data.map((item) => el("tr", { dataset: { id: item.id, status: item.status } },
          el("td", { class: "nowrap" }, time(item.received_at)),
          el("td", {}, item.connector + " · " + item.event_type,
            el("div", { class: "detail" }, code(item.event_id)), el("div", { class: "detail" }, code(item.id))),
          el("td", {}, badge(item.status), item.last_error ? el("div", { class: "detail" }, item.last_error) : null),
          el("td", { class: "num" }, item.attempts),
          el("td", {}, item.payment_id ? payLink(item.payment_id) : "—"),
          el("td", {}, item.status === "applied" ? "" : el("button", { type: "button", class: "secondary",
            "aria-label": "Replay " + item.id, onclick: async (e) => {
              e.target.disabled = true;
              try { await api("/admin/inbox/" + encodeURIComponent(item.id) + "/replay", { admin: true, method: "POST" }); location.reload(); }
              catch (err) { e.target.replaceWith(el("span", { role: "alert" }, err.message)); }
            } }, "Replay")))), { id: "inbox" })
        : el("p", { class: "empty", id: "inbox" }, "No inbox items" + (status ? " with status " + status : "") + "."));
    } catch (e) {
      inboxBox.replaceChildren(el("p", { class: "notice" }, e.status === 404
        ? "This server has no inbox API (GET /admin/inbox)." : e.message));
    }
    try {
      const response = await fetch("/debug/tasks", { headers: { Authorization: "Bearer " + adminToken } });
      tree.textContent = response.ok ? await response.text() : "HTTP " + response.status;
    } catch (e) { tree.textContent = e.message; }
    setState("Connected (admin)", "live");
  }

  // ------------------------------------------------------------------ router

  function route() {
    const path = location.pathname.replace(/\/+$/, "");
    let m;
    if ((m = path.match(/^\/dashboard\/payments\/([^/]+)$/))) return ["payment", (mine) => paymentView(mine, decodeURIComponent(m[1]))];
    if (path === "/dashboard/search") return ["search", searchView];
    if ((m = path.match(/^\/dashboard\/lists\/([^/]+)$/))) return ["overview", (mine) => listView(mine, decodeURIComponent(m[1]))];
    if (path === "/dashboard/admin") return ["admin", adminView];
    return ["overview", overviewView];
  }

  async function start() {
    const mine = ++generation;
    const [nav, view] = route();
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === nav) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    }
    if (nav === "admin") { await adminView(mine); return; }
    if (!apiKey) {
      setState("Not connected.");
      main.replaceChildren(el("h1", {}, "Paycast console"),
        el("p", { class: "notice" }, "Paste a merchant API key above and press Watch. It is kept in this tab only."));
      return;
    }
    setState("Connecting…");
    try {
      await view(mine);
    } catch (e) {
      if (mine === generation) setState(e.message, "error");
    }
  }

  $("#connect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    apiKey = key;
    sessionStorage.setItem("paycast.key", key);
    start();
  });

  if (apiKey) $("#api-key").value = apiKey;
  start();
})();
