// runbook's web UI: plain JavaScript over the HTTP API (/api/v1/), no
// framework and nothing fetched from elsewhere. Every value shown goes
// through el() as text, never as HTML.
"use strict";

const API = "/api/v1";
const main = document.getElementById("main");
let leave = () => {}; // what the current page stops when another opens
let me = null; // who is signed in (GET /api/v1/session), and their CSRF token

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  // A change carries the session's CSRF token (a cookie alone is refused).
  if (method !== "GET" && me && me.csrf) opts.headers["x-csrf-token"] = me.csrf;
  const r = await fetch(API + path, opts);
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch { data = text; }
  if (r.status === 401 && path !== "/session") signIn(data);
  return { status: r.status, ok: r.ok, data };
}

// ---- who is signed in ------------------------------------------------------

function drawWho() {
  const who = document.getElementById("who");
  if (!me) return put(who);
  put(who, el("span", { id: "me" }, me.user + " (" + me.role + ")"),
    me.via === "session" ? [" ", el("button", { id: "sign-out", type: "button", onclick: signOut }, "Sign out")] : null);
}

/// The sign-in form: an API token (`runbook token create`) for a session.
function signIn(why) {
  leave();
  leave = () => {};
  page++;
  me = null;
  drawWho();
  const token = el("input", { type: "password", id: "token", autocomplete: "off", placeholder: "rbk_..." });
  const problem = el("div", { id: "sign-in-error" });
  const submit = async (e) => {
    e.preventDefault();
    const r = await api("POST", "/session", { token: token.value.trim() });
    if (!r.ok) return put(problem, refusal(r.data));
    me = r.data;
    drawWho();
    route();
  };
  show(el("h1", {}, "Sign in"),
    why && why.error ? el("p", { class: "muted" }, why.error) : null,
    el("form", { id: "sign-in", onsubmit: submit },
      el("label", { for: "token" }, "API token "), token, " ",
      el("button", { type: "submit", id: "sign-in-button" }, "Sign in")),
    el("p", { class: "muted" }, "An administrator makes one with ", el("code", {}, "runbook token create NAME --role ROLE"), "."),
    problem);
}

async function signOut() {
  await api("DELETE", "/session");
  signIn(null);
}

/// Replaces a node's children (arrays flattened, null and undefined left out).
function put(node, ...children) {
  node.replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined));
}

// Each page opened is a new `page`; a page still loading when another
// opened (a slow fetch) must not draw over it: each page function shadows
// `show` with one that draws only while it is the current page.
let page = 0;

function show(...nodes) {
  put(main, ...nodes);
}

function showFor(mine) {
  return (...nodes) => { if (mine === page) put(main, ...nodes); };
}

function refusal(data) {
  return el("div", { class: "error", role: "alert" }, data && data.error ? data.error : String(data),
    data && data.hint ? el("div", {}, "hint: " + data.hint) : null);
}

const state = (s) => el("span", { class: "state " + s }, s);
const text = (v) => (typeof v === "string" ? v : JSON.stringify(v));

// ---- the library -----------------------------------------------------------

async function library() {
  const show = showFor(page);
  const r = await api("GET", "/playbooks");
  if (!r.ok) return show(refusal(r.data));
  const rows = r.data.playbooks.map((p) =>
    el("tr", {},
      el("td", {}, el("a", { href: "#/playbooks/" + encodeURIComponent(p.name) }, p.name)),
      el("td", {}, "v" + p.latest),
      el("td", {}, p.valid ? (p.description || "") : el("span", { class: "invalid" }, "invalid: " + p.error))));
  show(el("h1", {}, "Library"),
    el("table", { id: "playbooks" }, el("tr", {}, el("th", {}, "Playbook"), el("th", {}, "Version"), el("th", {}, "What it does")), rows));
}

// ---- a playbook: its form, the plan as you type, start -------------------

/// The typed value of a field, or an error.
function valueOf(spec, field) {
  if (spec.type === "boolean") return { value: field.checked };
  const raw = field.value;
  if (raw === "") {
    const required = spec.default === undefined && spec.required !== false;
    return required ? { error: "required" } : { skip: true };
  }
  switch (spec.type) {
    case "integer":
      return /^-?\d+$/.test(raw.trim()) ? { value: parseInt(raw, 10) } : { error: "a whole number" };
    case "number":
      return raw.trim() !== "" && !isNaN(Number(raw)) ? { value: Number(raw) } : { error: "a number" };
    case "list":
    case "map":
      try { return { value: JSON.parse(raw) }; } catch { return { error: "JSON " + (spec.type === "list" ? "[...]" : "{...}") }; }
    default:
      if (spec.pattern && !new RegExp(spec.pattern).test(raw)) return { error: "must match " + spec.pattern };
      return { value: raw };
  }
}

function fieldFor(name, spec) {
  const id = "input-" + name;
  let field;
  if (spec.values) {
    field = el("select", { id, name }, spec.values.map((v) => el("option", { value: text(v), selected: text(v) === text(spec.default) }, text(v))));
  } else if (spec.type === "boolean") {
    field = el("input", { id, name, type: "checkbox", checked: spec.default === true });
  } else if (spec.type === "list" || spec.type === "map") {
    field = el("textarea", { id, name, rows: 3 }, spec.default === undefined ? "" : JSON.stringify(spec.default));
  } else {
    field = el("input", { id, name, type: "text", value: spec.default === undefined ? "" : text(spec.default) });
  }
  const required = spec.default === undefined && spec.required !== false;
  const hint = [spec.type, required ? "required" : null, spec.description].filter(Boolean).join(" · ");
  return el("div", { class: "field" },
    el("label", { for: id }, name), field, el("div", { class: "muted" }, hint), el("div", { class: "error", id: "error-" + name }));
}

async function playbook(name) {
  const show = showFor(page);
  const r = await api("GET", "/playbooks/" + encodeURIComponent(name));
  if (!r.ok) return show(el("h1", {}, name), refusal(r.data), details(r.data));
  const pb = r.data.playbook;
  const specs = pb.inputs || {};
  const form = el("form", { id: "start-form", onsubmit: (e) => e.preventDefault() }, Object.entries(specs).map(([n, s]) => fieldFor(n, s)));
  const plan = el("pre", { id: "plan" }, "…");
  const start = el("button", { id: "start", type: "button", disabled: true }, "Start run");
  const outcome = el("div", { id: "outcome" });
  let timer = null;
  let seq = 0;

  const collect = () => {
    const inputs = {};
    let ok = true;
    for (const [n, s] of Object.entries(specs)) {
      const got = valueOf(s, form.elements[n]);
      document.getElementById("error-" + n).textContent = got.error || "";
      if (got.error) ok = false;
      else if (!got.skip) inputs[n] = got.value;
    }
    return { ok, inputs };
  };
  const preview = async () => {
    const { ok, inputs } = collect();
    start.disabled = true;
    if (!ok) { plan.textContent = "(fix the inputs to see the plan)"; return; }
    const mine = ++seq;
    const p = await api("POST", "/playbooks/" + encodeURIComponent(name) + "/plan", { inputs });
    if (mine !== seq) return; // a newer keystroke asked again
    if (p.ok) {
      plan.textContent = p.data.text;
      start.disabled = false;
    } else {
      plan.textContent = p.data.error || "";
      for (const d of (p.data.details || [])) {
        const slot = d.input && document.getElementById("error-" + d.input);
        if (slot) slot.textContent = d.message + (d.hint ? " (" + d.hint + ")" : "");
      }
    }
  };
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(preview, 250); });
  form.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(preview, 50); });
  start.addEventListener("click", async () => {
    const { ok, inputs } = collect();
    if (!ok) return;
    start.disabled = true;
    const s = await api("POST", "/runs", { playbook: name, inputs });
    if (s.status === 201) location.hash = "#/runs/" + s.data.run;
    else { put(outcome, refusal(s.data), details(s.data)); start.disabled = false; }
  });
  show(el("h1", {}, pb.name, " ", el("span", { class: "muted" }, "v" + pb.version)),
    el("p", {}, pb.description || ""),
    el("h2", {}, "Inputs"), Object.keys(specs).length ? form : el("p", { class: "muted" }, "none"),
    el("h2", {}, "Plan"), plan, start, outcome,
    el("p", {}, el("a", { href: "#/runs?playbook=" + encodeURIComponent(pb.name) }, "Its runs")));
  preview();
}

function details(data) {
  const d = data && data.details;
  if (!Array.isArray(d) || !d.length) return null;
  return el("ul", {}, d.map((x) => el("li", {}, x.input ? x.input + ": " + x.message
    : (x.file || "") + (x.line ? ":" + x.line + ":" + x.column : "") + " " + x.message + (x.hint ? " (hint: " + x.hint + ")" : ""))));
}

// ---- a run: steps, logs at the tail, following, approval, cancel ---------

function since(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 120 ? s.toFixed(0) + " s" : (s / 60).toFixed(1) + " min";
}

async function run(id) {
  const show = showFor(page);
  const head = el("div", { id: "run-head" });
  const steps = el("table", { id: "steps" });
  const grid = el("div", { id: "grid" });
  const approval = el("div", { id: "approval" });
  const log = el("pre", { id: "log" });
  const logTitle = el("h2", {}, "Log");
  // The Gantt chart the HTML report draws, redrawn at most every 2 s while
  // the run goes on (an image: it runs no script).
  const chart = el("img", { id: "timeline", alt: "timeline of the run" });
  const dag = el("img", { id: "dag", alt: "the steps of the run" });
  let charted = 0;
  const drawChart = (force) => {
    const now = Date.now();
    if (!force && now - charted < 2000) return;
    charted = now;
    chart.src = API + "/runs/" + encodeURIComponent(id) + "/timeline.svg?t=" + now;
    dag.src = API + "/runs/" + encodeURIComponent(id) + "/graph.svg?t=" + now;
  };
  let filter = null; // a step whose lines alone are shown
  let lines = [];
  let status = null;
  let refreshing = null;
  let approvalFor = null;
  let afterRefresh = () => {};

  // At most this many lines are in the page; earlier ones are a click away.
  const SHOWN = 5000;
  let before = null; // the `before` of the page preceding the first line held
  const earlier = el("button", { id: "earlier", type: "button", hidden: true, onclick: async () => {
    const page = await api("GET", "/runs/" + encodeURIComponent(id) + "/logs?tail=1000&before=" + before);
    if (!page.ok) return;
    lines = page.data.lines.concat(lines);
    before = page.data.before ?? null;
    log.dataset.scrolled = "";
    drawLog();
    log.scrollTop = 0;
  } }, "Earlier lines");
  const inside = (step, of) => step === of || step.startsWith(of + ".") || step.startsWith(of + "[");
  const drawLog = () => {
    const all = filter ? lines.filter((l) => inside(l.step, filter)) : lines;
    const shown = all.length > SHOWN ? all.slice(all.length - SHOWN) : all;
    earlier.hidden = before === null && shown.length === all.length;
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    put(log, shown.map((l) => el("div", { class: "line" }, el("span", { class: "step" }, l.step + "  "), l.line)));
    logTitle.textContent = filter ? "Log of " + filter + " (click it again for all)" : "Log";
    if (atEnd || !log.dataset.scrolled) { log.scrollTop = log.scrollHeight; log.dataset.scrolled = "1"; }
  };
  const drawSteps = () => {
    put(steps, el("tr", {}, el("th", {}, "Step"), el("th", {}, "State"), el("th", {}, "Attempts"), el("th", {}, "Took"), el("th", {}, "Error")),
      status.steps.map((s) => el("tr", {
        class: "step-row" + (filter === s.step ? " selected" : ""), "data-step": s.step,
        onclick: () => { filter = filter === s.step ? null : s.step; drawSteps(); drawLog(); },
      }, el("td", {}, s.step), el("td", {}, state(s.state)), el("td", {}, s.attempts),
        el("td", {}, s.duration_ms == null ? "" : (s.duration_ms / 1000).toFixed(1) + " s"), el("td", {}, s.error || ""))));
  };
  // Each fan-out as a grid: its items down, the steps of an item across,
  // each cell the step's state, or what a gate measured when it passed.
  const drawGrid = () => {
    const fans = new Map();
    for (const st of status.steps) {
      const m = /^(.*?)\[([^\]]+)\]\.(.+)$/.exec(st.step);
      if (!m) continue;
      const [, fan, item, child] = m;
      if (!fans.has(fan)) fans.set(fan, { items: [], children: [], cells: new Map() });
      const f = fans.get(fan);
      if (!f.items.includes(item)) f.items.push(item);
      if (!f.children.includes(child)) f.children.push(child);
      f.cells.set(item + "\u0000" + child, st);
    }
    put(grid, [...fans].map(([fan, f]) => el("div", { class: "fan" },
      el("h3", {}, fan + ": " + f.items.length + " items × " + f.children.length + " steps"),
      el("table", { class: "grid", "data-fan": fan },
        el("tr", {}, el("th", {}, "item"), f.children.map((c) => el("th", {}, c))),
        f.items.map((item) => el("tr", { "data-item": item }, el("th", {}, item), f.children.map((c) => {
          const st = f.cells.get(item + "\u0000" + c);
          if (!st) return el("td", { class: "cell" }, "");
          const said = st.measured || (st.state === "succeeded" ? "ok" : st.state);
          return el("td", { class: "cell state " + st.state, "data-step": st.step, title: st.error || st.measured || st.state }, said);
        })))))));
  };
  /// Elapsed (or taken) time against the RTO objective, and what was measured.
  const objective = () => {
    const o = status.objectives;
    if (!o || !o.rto) return null;
    const r = status.run;
    const live = ["running", "waiting", "queued"].includes(r.status);
    const elapsed = ((live ? Date.now() : Date.parse(r.updated_at)) - Date.parse(r.created_at)) / 1000;
    const target = durationSeconds(o.rto);
    const over = target !== null && elapsed > target;
    const measured = status.rto_seconds == null ? null
      : el("span", { class: target !== null && status.rto_seconds > target ? "failed" : "succeeded" },
        " · measured RTO " + status.rto_seconds.toFixed(1) + " s");
    return el("p", { id: "objective" },
      el("span", { class: over ? "failed" : "" }, (live ? "elapsed " : "took ") + short(elapsed) + " of the RTO objective " + o.rto),
      measured, o.rpo ? " · RPO objective " + o.rpo : null);
  };
  const drawHead = () => {
    const r = status.run;
    const live = ["running", "waiting", "queued"].includes(r.status);
    put(head,
      el("h1", {}, r.playbook, " ", el("span", { class: "muted" }, "v" + r.version), " ", el("span", { id: "run-status", class: "state " + r.status }, r.status)),
      el("p", { class: "muted" }, "run ", el("code", {}, r.id), " · started by " + r.user + " at " + r.created_at + " · " + since(r.created_at) + " ago"),
      el("p", { class: "inputs" }, Object.entries(r.inputs || {}).map(([k, v]) => el("code", {}, k + "=" + text(v)))),
      objective(),
      status.error ? el("p", { class: "failed" }, status.error) : null,
      el("p", {},
        live && status.may.operate ? el("button", { id: "cancel", type: "button", onclick: cancel }, "Cancel") : null, " ",
        el("a", { href: API + "/runs/" + r.id + "/report?format=html" }, "Report"), " · ",
        el("a", { href: API + "/runs/" + r.id + "/report?format=junit" }, "JUnit"), " · ",
        el("a", { href: API + "/runs/" + r.id + "/report?format=json" }, "JSON")));
  };
  const drawApproval = async () => {
    if (status.run.status !== "waiting") { put(approval); approvalFor = null; return; }
    if (approvalFor === status.plan_hash) return;
    approvalFor = status.plan_hash;
    const waiting = status.steps.filter((s) => s.state === "waiting").map((s) => s.step);
    const p = await api("POST", "/playbooks/" + encodeURIComponent(status.run.playbook + "@" + status.run.version) + "/plan", { inputs: status.run.inputs });
    const comment = el("input", { type: "text", id: "comment", placeholder: "why (journalled)" });
    const answer = async (how) => {
      const a = await api("POST", "/runs/" + status.run.id + "/" + how, { plan_hash: status.plan_hash, comment: comment.value || null, steps: waiting });
      if (!a.ok) approval.append(refusal(a.data));
      approvalFor = null;
      refresh();
    };
    put(approval, el("div", { class: "panel approval" },
      el("h2", {}, "Waiting for approval: " + waiting.join(", ")),
      el("p", {}, "Plan hash ", el("code", { id: "plan-hash" }, status.plan_hash), " (the answer is bound to it)"),
      el("pre", {}, p.ok ? p.data.text : "(the plan cannot be shown: " + (p.data.error || "") + ")"),
      status.may.answer ? [comment, " ",
        el("button", { id: "approve", type: "button", onclick: () => answer("approve") }, "Approve"), " ",
        el("button", { id: "reject", type: "button", onclick: () => answer("reject") }, "Reject")]
        : el("p", { id: "may-not-answer", class: "muted" }, "As " + (me ? me.user : "you") + " you may not answer it: that needs the approver role on " + status.run.playbook + ".")));
  };
  const refresh = async () => {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      const r = await api("GET", "/runs/" + encodeURIComponent(id));
      if (r.ok) {
        const was = status ? status.run.status : null;
        status = r.data;
        drawHead(); drawSteps(); drawGrid(); drawChart(was !== status.run.status); await drawApproval(); afterRefresh();
      }
      else show(refusal(r.data));
    })();
    try { await refreshing; } finally { refreshing = null; }
  };
  const cancel = async () => {
    const c = await api("POST", "/runs/" + status.run.id + "/cancel", {});
    if (!c.ok) approval.append(refusal(c.data));
    refresh();
  };

  show(head, approval, el("h2", {}, "Steps"), el("div", { class: "chart" }, dag), steps, grid, el("h2", {}, "Timeline"), el("div", { class: "chart" }, chart), logTitle, earlier, log);
  await refresh();
  if (!status) return;
  // The log opens at its tail; then everything after it, live.
  const tail = await api("GET", "/runs/" + status.run.id + "/logs?tail=500");
  lines = tail.ok ? tail.data.lines : [];
  before = tail.ok ? tail.data.before ?? null : null;
  drawLog();
  // Each item's id is the cursor after it: following again (after an
  // approval, a resume) starts where the last stream stopped.
  let cursor = "0." + (tail.ok ? tail.data.next : 0);
  let events = null;
  let pending = null;
  let drawing = 0;
  const follow = () => {
    events = new EventSource(API + "/runs/" + status.run.id + "/events?after=" + cursor);
    // However fast events come, the log is drawn once a frame and the
    // steps at most every 250 ms: a 1,000-item fan-out never freezes the page.
    events.addEventListener("log", (e) => {
      cursor = e.lastEventId;
      lines.push(JSON.parse(e.data));
      if (lines.length > 4 * SHOWN && !filter) { lines = lines.slice(lines.length - SHOWN); before = lines[0].seq; }
      if (!drawing) drawing = requestAnimationFrame(() => { drawing = 0; drawLog(); });
    });
    events.addEventListener("journal", (e) => { cursor = e.lastEventId; if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 250); });
    events.addEventListener("end", (e) => { ended = JSON.parse(e.data).status; events.close(); events = null; refresh(); });
  };
  // The stream ended at a status; once the run is past it (approved,
  // resumed), what it recorded since is read from the same cursor.
  let ended = null;
  const again = () => { if (!events && status.run.status !== ended) follow(); };
  follow();
  const ticker = setInterval(() => {
    if (!status) return;
    again(); drawHead();
    if (["running", "waiting", "queued"].includes(status.run.status)) drawChart(false);
  }, 1000);
  afterRefresh = again;
  leave = () => { if (events) events.close(); clearInterval(ticker); };
}

// ---- runs and locks ------------------------------------------------------

async function runs(query) {
  const show = showFor(page);
  const playbook = new URLSearchParams(query).get("playbook") || "";
  const r = await api("GET", "/runs?limit=100" + (playbook ? "&playbook=" + encodeURIComponent(playbook) : ""));
  if (!r.ok) return show(refusal(r.data));
  const filter = el("input", { type: "text", id: "filter", value: playbook, placeholder: "playbook" });
  filter.addEventListener("change", () => { location.hash = "#/runs" + (filter.value ? "?playbook=" + encodeURIComponent(filter.value) : ""); });
  // The status filter hides the other rows in place.
  const statuses = [...new Set(r.data.map((x) => x.status))].sort();
  const only = el("select", { id: "status-filter", onchange: () => {
    for (const row of document.querySelectorAll("#runs tr[data-status]")) row.hidden = only.value !== "" && row.dataset.status !== only.value;
  } }, el("option", { value: "" }, "any status"), statuses.map((x) => el("option", { value: x }, x)));
  // Two runs ticked: compare them.
  const picked = [];
  const compare = el("button", { id: "compare", type: "button", disabled: true,
    onclick: () => { location.hash = "#/diff/" + picked[0] + "/" + picked[1]; } }, "Compare the two ticked runs");
  const tick = (id) => el("input", { type: "checkbox", class: "pick", "data-run": id, onchange: (e) => {
    if (e.target.checked) picked.push(id); else picked.splice(picked.indexOf(id), 1);
    compare.disabled = picked.length !== 2;
  } });
  const chart = playbook
    ? el("div", { class: "chart" }, el("img", { id: "history", alt: "durations and outcomes of " + playbook,
      src: API + "/playbooks/" + encodeURIComponent(playbook) + "/history.svg?limit=60" }))
    : el("p", { class: "muted" }, "Filter by a playbook for the chart of its runs' durations and outcomes.");
  show(el("h1", {}, "Runs"), el("p", {}, "Playbook ", filter, " ", only, " ", compare), chart,
    el("table", { id: "runs" }, el("tr", {}, ["", "Run", "Playbook", "Status", "Started", "By", "Inputs"].map((h) => el("th", {}, h))),
      r.data.map((x) => el("tr", { "data-status": x.status },
        el("td", {}, tick(x.id)),
        el("td", {}, el("a", { href: "#/runs/" + x.id }, x.id.slice(-8))),
        el("td", {}, el("a", { href: "#/runs?playbook=" + encodeURIComponent(x.playbook) }, x.playbook), " v" + x.version), el("td", {}, state(x.status)),
        el("td", {}, x.created_at), el("td", {}, x.user),
        el("td", { class: "inputs" }, Object.entries(x.inputs || {}).map(([k, v]) => el("code", {}, k + "=" + text(v))))))));
}

/// A duration as a playbook writes it (`90s`, `15m`, `1h30m`, `500ms`) in
/// seconds, or null.
function durationSeconds(textValue) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
  let total = 0;
  const parts = String(textValue).trim().match(/(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/g);
  if (!parts) return null;
  for (const p of parts) {
    const [, n, u] = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/.exec(p);
    total += Number(n) * units[u];
  }
  return total;
}

/// Seconds as `1h 2m 3s`.
function short(s) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
}

/// Seconds between two RFC 3339 times.
const seconds = (from, to) => (Date.parse(to) - Date.parse(from)) / 1000;

/// Two runs side by side: inputs, plan, outcome, and each step's state and
/// time, what differs marked.
async function diff(a, b) {
  const show = showFor(page);
  const [ra, rb] = await Promise.all([api("GET", "/runs/" + encodeURIComponent(a)), api("GET", "/runs/" + encodeURIComponent(b))]);
  if (!ra.ok) return show(refusal(ra.data));
  if (!rb.ok) return show(refusal(rb.data));
  const [x, y] = [ra.data, rb.data];
  const planOf = (s) => api("POST", "/playbooks/" + encodeURIComponent(s.run.playbook + "@" + s.run.version) + "/plan", { inputs: s.run.inputs });
  const [pa, pb] = await Promise.all([planOf(x), planOf(y)]);
  const row = (label, va, vb, id) => el("tr", { class: va === vb ? "" : "differs", "data-row": id || label },
    el("th", {}, label), el("td", {}, va), el("td", {}, vb));
  const took = (s) => ["running", "queued", "waiting"].includes(s.run.status) ? "" : seconds(s.run.created_at, s.run.updated_at).toFixed(1) + " s";
  const keys = [...new Set([...Object.keys(x.run.inputs || {}), ...Object.keys(y.run.inputs || {})])];
  const stepsOf = (s) => Object.fromEntries(s.steps.map((st) => [st.step, st]));
  const [sa, sb] = [stepsOf(x), stepsOf(y)];
  const names = [...new Set([...Object.keys(sa), ...Object.keys(sb)])];
  const stepText = (st) => st ? st.state + (st.attempts > 1 ? " ×" + st.attempts : "") + (st.duration_ms == null ? "" : " · " + (st.duration_ms / 1000).toFixed(1) + " s") : "-";
  const planLines = (p) => (p.ok ? p.data.text : "(no plan: " + (p.data.error || "") + ")").split("\n");
  const [la, lb] = [planLines(pa), planLines(pb)];
  const marked = (lines, other) => el("pre", {}, lines.map((l) => el("div", { class: other.includes(l) ? "" : "differs" }, l)));
  show(el("h1", {}, "Two runs of " + x.run.playbook + (x.run.playbook === y.run.playbook ? "" : " and " + y.run.playbook)),
    el("table", { id: "diff" },
      el("tr", {}, el("th", {}, ""), el("th", {}, el("a", { href: "#/runs/" + x.run.id }, x.run.id)), el("th", {}, el("a", { href: "#/runs/" + y.run.id }, y.run.id))),
      row("version", "v" + x.run.version, "v" + y.run.version),
      row("status", x.run.status, y.run.status),
      row("started", x.run.created_at + " by " + x.run.user, y.run.created_at + " by " + y.run.user, "started"),
      row("took", took(x), took(y)),
      row("plan hash", x.plan_hash, y.plan_hash),
      keys.map((k) => row("input " + k, text(x.run.inputs[k] ?? "-"), text(y.run.inputs[k] ?? "-"), "input-" + k)),
      names.map((n) => row(n, stepText(sa[n]), stepText(sb[n]), "step-" + n))),
    el("h2", {}, "Plans (lines only one of them has are marked)"),
    el("div", { class: "side" }, marked(la, lb), marked(lb, la)));
}

async function locks() {
  const show = showFor(page);
  const r = await api("GET", "/locks");
  if (!r.ok) return show(refusal(r.data));
  show(el("h1", {}, "Locks"), r.data.length === 0 ? el("p", { class: "muted" }, "No lock is held.") :
    el("table", {}, el("tr", {}, ["Key", "Run", "By", "Since", "Until"].map((h) => el("th", {}, h))),
      r.data.map((l) => el("tr", {}, el("td", {}, l.key), el("td", {}, el("a", { href: "#/runs/" + l.run_id }, l.run_id.slice(-8))),
        el("td", {}, l.user), el("td", {}, l.since), el("td", {}, l.expires_at + (l.expired ? " (expired)" : ""))))));
}

async function workers() {
  const show = showFor(page);
  const r = await api("GET", "/workers");
  if (r.status === 501) return show(el("h1", {}, "Workers"), el("p", { class: "muted" }, r.data.error));
  if (!r.ok) return show(refusal(r.data));
  show(el("h1", {}, "Workers"), r.data.length === 0 ? el("p", { class: "muted" }, "No worker has served this state yet.") :
    el("table", { id: "workers" }, el("tr", {}, ["Name", "State", "Runs", "Host", "Last seen"].map((h) => el("th", {}, h))),
      r.data.map((w) => el("tr", {}, el("td", {}, w.name), el("td", {}, state(w.state)), el("td", {}, w.running + "/" + w.concurrency),
        el("td", {}, w.host + ":" + w.pid), el("td", {}, w.seen_at)))));
}

// ---- routing -------------------------------------------------------------

function route() {
  leave();
  leave = () => {};
  page++;
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "playbooks" && parts[1]) return playbook(parts[1]);
  if (parts[0] === "runs" && parts[1]) return run(parts[1]);
  if (parts[0] === "runs") return runs(query || "");
  if (parts[0] === "diff" && parts[2]) return diff(parts[1], parts[2]);
  if (parts[0] === "locks") return locks();
  if (parts[0] === "workers") return workers();
  return library();
}

window.addEventListener("hashchange", route);
// Who is asking first: signed in (or local, or named by a proxy), the page
// asked for; else the sign-in form.
api("GET", "/session").then((r) => {
  if (!r.ok) return signIn(null);
  me = r.data;
  drawWho();
  route();
});
