// brim web UI: vanilla JS, no build step, no network access beyond this master.
// Polls /state every second, keeps a short usage history per task, renders the page named
// by the URL hash (#/, #/agents, #/frameworks, #/tasks, #/task/<id>, #/slack).
// Every value from /state is put in the DOM with textContent (see `h`), never as HTML.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300; // samples kept per task (5 minutes at 1 s)
const TERMINAL = new Set(["TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
  "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"]);

let state = null;        // last /state document
let stateError = null;   // last fetch error (string) or null
const history = new Map(); // task id -> [{t, cpu_ns, mem, rx, tx, runq}]
let logs = null;         // sandbox followers of the task page: {taskId, files: {stdout, stderr}}
let pageKey = "";        // re-render guard for inputs (filters keep focus)
let filters = { text: "", state: "active" };

// ---------- helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function num(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (Math.abs(x) >= 100) return x.toFixed(0);
  return String(Number(x.toFixed(digits)));
}

function bytes(b) {
  if (b === null || b === undefined || Number.isNaN(b)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${num(b, 1)} ${units[i]}`;
}

function mib(m) { return m === undefined || m === null ? "–" : bytes(m * 1024 * 1024); }
function scalar(res, name) { const v = res && res[name]; return typeof v === "number" ? v : 0; }
function short(id) { return id && id.length > 14 ? id.slice(0, 12) + "…" : (id || "–"); }
function ago(ts) {
  if (!ts) return "–";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

function statePill(s) {
  const name = (s || "UNKNOWN").replace(/^TASK_/, "");
  let cls = "pill";
  if (s === "TASK_RUNNING") cls += " ok";
  else if (s === "TASK_FINISHED") cls += " info";
  else if (s === "TASK_STAGING" || s === "TASK_STARTING" || s === "TASK_KILLING") cls += " warn";
  else if (TERMINAL.has(s)) cls += " bad";
  return h("span", { class: cls }, name);
}

function bar(used, total, kind) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  return h("div", { class: "bar" + (kind ? " " + kind : "") }, h("span", { style: `width:${pct}%` }));
}

function table(id, headers, rows, empty) {
  if (rows.length === 0) return h("div", { class: "empty", id }, empty);
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

function allTasks() {
  if (!state) return [];
  return (state.tasks || []).concat(state.completed_tasks || []);
}

function agentById(id) { return ((state && state.agents) || []).find((a) => a.id === id); }
function frameworkById(id) { return ((state && state.frameworks) || []).find((f) => f.id === id); }

// ---------- usage history and rates ----------

function recordUsage() {
  for (const t of (state.tasks || [])) {
    const u = t.usage;
    if (!u || typeof u.timestamp !== "number") continue;
    let hs = history.get(t.id);
    if (!hs) { hs = []; history.set(t.id, hs); }
    if (hs.length && hs[hs.length - 1].t >= u.timestamp) continue;
    hs.push({
      t: u.timestamp,
      cpu_ns: u.cpu_ns,
      mem: u.mem_current_bytes,
      rx: u.net_rx_bytes,
      tx: u.net_tx_bytes,
      runq: u.runq_wait_ns,
    });
    if (hs.length > HISTORY) hs.splice(0, hs.length - HISTORY);
  }
}

// Per-second rate of a cumulative counter between consecutive samples: [{t, v}].
function rate(hs, key, scale) {
  const out = [];
  for (let i = 1; i < hs.length; i++) {
    const a = hs[i - 1], b = hs[i];
    if (typeof a[key] !== "number" || typeof b[key] !== "number") continue;
    const dt = b.t - a.t;
    if (dt <= 0 || b[key] < a[key]) continue; // restart or clock step: skip
    out.push({ t: b.t, v: (b[key] - a[key]) / dt / scale });
  }
  return out;
}

function gauge(hs, key, scale) {
  return hs.filter((s) => typeof s[key] === "number").map((s) => ({ t: s.t, v: s[key] / scale }));
}

// Latest cpu use of a task in cpus (1.0 = one core), or null.
function cpuNow(taskId) {
  const r = rate(history.get(taskId) || [], "cpu_ns", 1e9);
  return r.length ? r[r.length - 1].v : null;
}

// ---------- charts ----------

function drawChart(canvas, series, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, hgt = canvas.clientHeight || 150;
  canvas.width = w * dpr; canvas.height = hgt * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, hgt);
  const padL = 56, padR = 8, padT = 8, padB = 20;
  const pw = w - padL - padR, ph = hgt - padT - padB;
  const pts = series.flatMap((s) => s.data);
  g.font = "11px system-ui, DejaVu Sans, sans-serif";
  g.fillStyle = "#6b7686";
  if (pts.length === 0) {
    g.fillText(opts.empty || "waiting for usage samples…", padL, padT + ph / 2);
    return;
  }
  const tMax = Math.max(...pts.map((p) => p.t));
  const tMin = Math.min(tMax - 60, Math.min(...pts.map((p) => p.t)));
  const span = Math.max(1, tMax - tMin);
  let vMax = Math.max(opts.min || 0, ...pts.map((p) => p.v));
  vMax = vMax <= 0 ? 1 : vMax * 1.15;
  g.strokeStyle = "#e2e7ee"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = padT + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(padL, y); g.lineTo(padL + pw, y); g.stroke();
    g.fillText(opts.fmt((vMax * i) / 4), 4, y + 4);
  }
  g.fillText(`-${Math.round(span)}s`, padL, hgt - 4);
  g.fillText("now", padL + pw - 20, hgt - 4);
  for (const s of series) {
    if (!s.data.length) continue;
    g.strokeStyle = s.color; g.lineWidth = 1.8;
    g.beginPath();
    s.data.forEach((p, i) => {
      const x = padL + (pw * (p.t - tMin)) / span;
      const y = padT + ph - (ph * p.v) / vMax;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    const lastPt = s.data[s.data.length - 1];
    g.fillStyle = s.color; g.beginPath();
    g.arc(padL + (pw * (lastPt.t - tMin)) / span, padT + ph - (ph * lastPt.v) / vMax, 2.5, 0, 2 * Math.PI);
    g.fill();
    g.globalAlpha = 0.08; g.lineTo(padL + pw * (s.data[s.data.length - 1].t - tMin) / span, padT + ph);
    g.lineTo(padL + pw * (s.data[0].t - tMin) / span, padT + ph); g.closePath();
    g.fillStyle = s.color; g.fill(); g.globalAlpha = 1; g.fillStyle = "#6b7686";
  }
}

// ---------- pages ----------

function overview() {
  const agents = state.agents || [];
  const active = agents.filter((a) => a.active);
  const sum = (xs, f) => xs.reduce((acc, x) => acc + f(x), 0);
  const cpusTotal = sum(active, (a) => scalar(a.resources, "cpus"));
  const cpusUsed = sum(active, (a) => scalar(a.used, "cpus"));
  const memTotal = sum(active, (a) => scalar(a.resources, "mem"));
  const memUsed = sum(active, (a) => scalar(a.used, "mem"));
  const revCpus = sum(active, (a) => scalar(a.revocable, "cpus"));
  const revMem = sum(active, (a) => scalar(a.revocable, "mem"));
  const live = (state.tasks || []).filter((t) => !TERMINAL.has(t.state));
  const running = live.filter((t) => t.state === "TASK_RUNNING");
  const measured = sum(running, (t) => cpuNow(t.id) || 0);
  const frameworks = (state.frameworks || []).filter((f) => f.connected);
  const card = (label, value, sub, extra) =>
    h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value),
      sub ? h("div", { class: "sub" }, sub) : null, extra || null);
  return [
    h("h1", {}, "Cluster overview"),
    h("div", { class: "cards", id: "overview-cards" },
      card("Agents", `${active.length}`, `${agents.length - active.length} not connected`),
      card("Frameworks", `${frameworks.length}`, `${(state.frameworks || []).length} known`),
      card("Tasks running", `${running.length}`, `${live.length} live · ${(state.completed_tasks || []).length} completed`),
      card("CPUs allocated", `${num(cpusUsed)} / ${num(cpusTotal)}`, `measured use ${num(measured)} cpus`, bar(cpusUsed, cpusTotal)),
      card("Memory allocated", `${mib(memUsed)}`, `of ${mib(memTotal)}`, bar(memUsed, memTotal, "mem")),
      card("Revocable", `${num(revCpus)} cpus`, `${mib(revMem)} mem lent by agents (oversubscription)`)),
    h("h2", {}, "Recent tasks"),
    taskTable(allTasks().slice().sort((a, b) => (b.updated_time || 0) - (a.updated_time || 0)).slice(0, 10),
      "overview-tasks"),
  ];
}

// A link to the tasks page filtered by `id` (an agent's or a framework's).
function tasksOf(id, label) {
  return h("a", { href: "#/tasks", title: "show its tasks", onclick: () => { filters.text = id; filters.state = "all"; } }, label);
}

function agentsPage() {
  const rows = (state.agents || []).map((a) => {
    const n = (state.tasks || []).filter((t) => t.agent_id === a.id && !TERMINAL.has(t.state)).length;
    const cpu = scalar(a.used, "cpus"), cpuT = scalar(a.resources, "cpus");
    const mem = scalar(a.used, "mem"), memT = scalar(a.resources, "mem");
    const attrs = Object.entries(a.attributes || {}).map(([k, v]) => `${k}:${v}`).join(" ");
    return h("tr", { "data-agent-id": a.id },
      h("td", { class: "mono", title: a.id }, short(a.id)),
      h("td", {}, tasksOf(a.id, a.hostname || "–")),
      h("td", { class: "mono" }, a.http_address || "–"),
      h("td", {}, a.active ? h("span", { class: "pill ok" }, "connected") : h("span", { class: "pill bad" }, a.status || "disconnected")),
      h("td", {}, `${num(cpu)} / ${num(cpuT)}`, h("div", { class: "bar small" }, h("span", { style: `width:${cpuT ? 100 * cpu / cpuT : 0}%` }))),
      h("td", {}, `${mib(mem)} / ${mib(memT)}`, h("div", { class: "bar small mem" }, h("span", { style: `width:${memT ? 100 * mem / memT : 0}%` }))),
      h("td", {}, String(n)),
      h("td", { class: "mono" }, attrs || "–"),
      h("td", {}, ago(a.registered_time)));
  });
  return [h("h1", {}, "Agents"),
    table("agents-table", ["ID", "Hostname", "Address", "Status", "CPUs", "Memory", "Tasks", "Attributes", "Registered"],
      rows, "No agents registered. Start one with `brim agent --master HOST:PORT`.")];
}

function frameworksPage() {
  const rows = (state.frameworks || []).map((f) => {
    const n = (state.tasks || []).filter((t) => t.framework_id === f.id && !TERMINAL.has(t.state)).length;
    let status = h("span", { class: "pill ok" }, "active");
    if (!f.connected) status = h("span", { class: "pill bad" }, "disconnected");
    else if (f.suppressed) status = h("span", { class: "pill warn" }, "suppressed");
    return h("tr", { "data-framework-id": f.id },
      h("td", { class: "mono", title: f.id }, short(f.id)),
      h("td", {}, tasksOf(f.id, f.name || "–")),
      h("td", {}, f.role || "*"),
      h("td", {}, f.user || "–"),
      h("td", {}, status),
      h("td", {}, String(n)),
      h("td", {}, num(scalar(f.allocated, "cpus"))),
      h("td", {}, mib(scalar(f.allocated, "mem"))),
      h("td", {}, ago(f.registered_time)));
  });
  return [h("h1", {}, "Frameworks"),
    table("frameworks-table", ["ID", "Name", "Role", "User", "Status", "Tasks", "CPUs", "Memory", "Registered"],
      rows, "No frameworks. Try `brim run -- echo hello`.")];
}

function taskTable(tasks, id) {
  const rows = tasks.map((t) => {
    const cpu = cpuNow(t.id);
    const mem = t.usage && t.usage.mem_current_bytes;
    const a = agentById(t.agent_id), f = frameworkById(t.framework_id);
    return h("tr", { "data-task-id": t.id },
      h("td", { class: "mono" }, h("a", { href: `#/task/${encodeURIComponent(t.id)}` }, t.id)),
      h("td", {}, t.name || "–"),
      h("td", {}, statePill(t.state)),
      h("td", {}, f ? f.name : short(t.framework_id)),
      h("td", {}, a ? (a.hostname || short(a.id)) : short(t.agent_id)),
      h("td", {}, `${num(scalar(t.resources, "cpus"))} / ${mib(scalar(t.resources, "mem"))}`),
      h("td", {}, cpu === null ? "–" : `${num(cpu * 100, 1)}%`),
      h("td", {}, mem === undefined ? "–" : bytes(mem)),
      h("td", {}, t.exit_code === null || t.exit_code === undefined ? "–" : String(t.exit_code)),
      h("td", {}, ago(t.updated_time)));
  });
  return table(id, ["ID", "Name", "State", "Framework", "Agent", "Asked cpus / mem", "CPU", "Memory", "Exit", "Updated"],
    rows, "No tasks match.");
}

function matches(t) {
  const s = filters.state;
  if (s === "active" && TERMINAL.has(t.state)) return false;
  if (s === "terminal" && !TERMINAL.has(t.state)) return false;
  if (s.startsWith("TASK_") && t.state !== s) return false;
  const q = filters.text.trim().toLowerCase();
  if (!q) return true;
  const f = frameworkById(t.framework_id), a = agentById(t.agent_id);
  return [t.id, t.name, t.state, t.agent_id, t.framework_id, f && f.name, a && a.hostname, t.message]
    .some((x) => x && String(x).toLowerCase().includes(q));
}

function tasksPage(root) {
  // The toolbar is built once per visit so typing keeps focus; the table refreshes below it.
  if (pageKey !== "tasks") {
    pageKey = "tasks";
    const states = ["active", "terminal", "all", "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING",
      "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_UNREACHABLE"];
    const select = h("select", { id: "task-state-filter", onchange: (e) => { filters.state = e.target.value; render(); } },
      states.map((s) => h("option", { value: s, selected: s === filters.state }, s.replace(/^TASK_/, "").toLowerCase())));
    const input = h("input", { id: "task-text-filter", type: "search", placeholder: "filter by id, name, agent, framework…",
      value: filters.text, oninput: (e) => { filters.text = e.target.value; render(); } });
    root.replaceChildren(h("h1", {}, "Tasks"), h("div", { class: "toolbar" }, input, select,
      h("span", { class: "muted", id: "task-count" })), h("div", { id: "tasks-body" }));
  }
  const shown = allTasks().filter(matches);
  document.getElementById("task-count").textContent = `${shown.length} of ${allTasks().length} tasks`;
  document.getElementById("tasks-body").replaceChildren(taskTable(shown, "tasks-table"));
}

function taskPage(root, id) {
  const t = allTasks().find((x) => x.id === id);
  if (!t) {
    pageKey = "";
    root.replaceChildren(h("h1", {}, `Task ${id}`), h("div", { class: "empty" }, "This task is not in the master's /state (yet, or any more)."));
    return;
  }
  const key = `task:${id}`;
  if (pageKey !== key) {
    pageKey = key;
    const chart = (cid, title) => h("div", { class: "chart" },
      h("div", { class: "title" }, title, h("span", { class: "now", id: `${cid}-now` })),
      h("canvas", { id: cid }));
    root.replaceChildren(
      h("h1", {}, "Task ", h("span", { class: "mono" }, t.id)),
      h("div", { id: "task-details" }),
      h("h2", {}, "Usage"),
      h("div", { class: "grid2" },
        chart("chart-cpu", "CPU (% of one core)"), chart("chart-mem", "Memory"),
        chart("chart-net", "Network (rx / tx per second)"), chart("chart-runq", "Run-queue wait (ms per second)")),
      h("h2", {}, "Sandbox"),
      h("div", { class: "grid2" },
        h("div", {}, h("div", { class: "muted" }, "stdout"), h("pre", { class: "log", id: "task-stdout" })),
        h("div", {}, h("div", { class: "muted" }, "stderr"), h("pre", { class: "log err", id: "task-stderr" }))));
    startLogs(t);
  }
  const a = agentById(t.agent_id), f = frameworkById(t.framework_id);
  const kv = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
  document.getElementById("task-details").replaceChildren(h("dl", { class: "kv" },
    kv("Name", t.name || "–"), kv("State", statePill(t.state)),
    kv("Framework", f ? `${f.name} (${t.framework_id})` : t.framework_id),
    kv("Agent", a ? `${a.hostname || a.id} — ${a.http_address}` : t.agent_id),
    kv("Resources", Object.entries(t.resources || {}).map(([k, v]) => `${k}:${v}`).join("  ") || "–"),
    kv("Exit code", t.exit_code === null || t.exit_code === undefined ? "–" : String(t.exit_code)),
    kv("Message", t.message || "–"), kv("Updated", ago(t.updated_time))));

  const hs = history.get(id) || [];
  const cpu = rate(hs, "cpu_ns", 1e7); // ns/s → % of one core
  const mem = gauge(hs, "mem", 1);
  const rx = rate(hs, "rx", 1), tx = rate(hs, "tx", 1);
  const runq = rate(hs, "runq", 1e6);
  const last = (xs, f) => (xs.length ? f(xs[xs.length - 1].v) : "");
  drawChart(document.getElementById("chart-cpu"), [{ data: cpu, color: "#2f7ed8" }], { fmt: (v) => `${num(v, 0)}%`, min: 10 });
  drawChart(document.getElementById("chart-mem"), [{ data: mem, color: "#8e44ad" }], { fmt: bytes });
  drawChart(document.getElementById("chart-net"), [{ data: rx, color: "#16a085" }, { data: tx, color: "#e67e22" }],
    { fmt: (v) => bytes(v) + "/s", empty: hs.some((s) => typeof s.rx === "number") ? undefined : "no network data (needs the agent's eBPF telemetry)" });
  drawChart(document.getElementById("chart-runq"), [{ data: runq, color: "#c0392b" }],
    { fmt: (v) => `${num(v, 1)}`, empty: hs.some((s) => typeof s.runq === "number") ? undefined : "no run-queue data (needs the agent's eBPF telemetry)" });
  document.getElementById("chart-cpu-now").textContent = last(cpu, (v) => `${num(v, 1)}%`);
  document.getElementById("chart-mem-now").textContent = last(mem, bytes);
  document.getElementById("chart-net-now").textContent = rx.length ? `${last(rx, bytes)}/s in · ${last(tx, bytes)}/s out` : "";
  document.getElementById("chart-runq-now").textContent = last(runq, (v) => `${num(v, 1)} ms/s`);
  if (logs) logs.done = TERMINAL.has(t.state);
}

// Follows stdout/stderr through the master's proxy to the agent (no CORS, one port).
function startLogs(t) {
  stopLogs();
  const me = { taskId: t.id, stopped: false, done: false };
  logs = me;
  for (const file of ["stdout", "stderr"]) {
    let offset = 0;
    const el = document.getElementById(`task-${file}`);
    const url = () => `/agents/${encodeURIComponent(t.agent_id)}/sandbox/${encodeURIComponent(t.framework_id)}/` +
      `${encodeURIComponent(t.id)}/${file}?offset=${offset}`;
    const tick = async () => {
      if (me.stopped) return;
      let got = 0;
      try {
        const r = await fetch(url(), { cache: "no-store" });
        if (r.ok) {
          const buf = new Uint8Array(await r.arrayBuffer());
          got = buf.length;
          if (got) {
            const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
            el.append(new TextDecoder().decode(buf));
            offset += got;
            if (atBottom) el.scrollTop = el.scrollHeight;
          }
          el.dataset.state = "ok";
        } else {
          el.dataset.state = `http ${r.status}`;
          if (!el.textContent) el.textContent = `(${(await r.text()).trim()})`;
        }
      } catch (e) {
        el.dataset.state = "error";
      }
      if (!me.stopped && !(me.done && got === 0)) setTimeout(tick, got ? 50 : POLL_MS);
    };
    tick();
  }
}

function stopLogs() { if (logs) logs.stopped = true; logs = null; }

function slackPage() {
  const rows = (state.agents || []).filter((a) => a.active).map((a) => {
    const running = (state.tasks || []).filter((t) => t.agent_id === a.id && t.state === "TASK_RUNNING");
    const alloc = scalar(a.used, "cpus");
    const measured = running.reduce((acc, t) => acc + (cpuNow(t.id) || 0), 0);
    const memAlloc = scalar(a.used, "mem");
    const memUsed = running.reduce((acc, t) => acc + ((t.usage && t.usage.mem_current_bytes) || 0), 0) / 1048576;
    return h("tr", { "data-agent-id": a.id },
      h("td", {}, a.hostname || short(a.id)),
      h("td", {}, num(scalar(a.resources, "cpus"))),
      h("td", {}, num(alloc)),
      h("td", {}, num(measured)),
      h("td", {}, h("strong", {}, num(Math.max(0, alloc - measured)))),
      h("td", {}, mib(memAlloc)),
      h("td", {}, mib(memUsed)),
      h("td", {}, h("strong", {}, mib(Math.max(0, memAlloc - memUsed)))),
      h("td", {}, `${num(scalar(a.revocable_used, "cpus"))} / ${num(scalar(a.revocable, "cpus"))} cpus`),
      h("td", {}, `${mib(scalar(a.revocable_used, "mem"))} / ${mib(scalar(a.revocable, "mem"))}`));
  });
  return [h("h1", {}, "Slack"),
    h("div", { class: "notice", id: "slack-notice" },
      "CPU and mem slack are allocated minus measured use (newest samples). ",
      "With oversubscription (agents started with --oversubscribe) agents lend the slack they estimate (high percentile of use over a window, times a margin) as revocable resources: ",
      "Revocable shows what revocable tasks use of it. Agents without --oversubscribe lend nothing."),
    table("slack-table", ["Agent", "CPUs total", "CPUs allocated", "CPUs used", "CPU slack", "Mem allocated", "Mem used", "Mem slack", "Revocable cpus (used / lent)", "Revocable mem (used / lent)"],
      rows, "No connected agents.")];
}

// ---------- shell ----------

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  return { page: page || "overview", arg: rest.length ? decodeURIComponent(rest.join("/")) : "" };
}

function render() {
  const root = document.getElementById("app");
  const { page, arg } = route();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (page === "task" && a.dataset.page === "tasks"));
  }
  if (page !== "task") stopLogs();
  if (!state) {
    if (stateError) root.replaceChildren(h("div", { class: "empty" }, `Cannot read /state: ${stateError}`));
    return;
  }
  if (page === "tasks") return tasksPage(root);
  if (page === "task") return taskPage(root, arg);
  pageKey = "";
  const pages = { overview, agents: agentsPage, frameworks: frameworksPage, slack: slackPage };
  const f = pages[page] || overview;
  root.replaceChildren(...f());
}

async function poll() {
  try {
    const r = await fetch("/state", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    state = await r.json();
    stateError = null;
    recordUsage();
    const st = document.getElementById("status");
    st.textContent = `master ${state.master_id || ""} · ${state.leader || ""} · live`;
    st.classList.remove("bad");
    document.getElementById("footer-info").textContent =
      `brim ${state.version || ""} · ${state.outstanding_offers || 0} outstanding offers · refreshed ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    stateError = String(e.message || e);
    const st = document.getElementById("status");
    st.textContent = `master unreachable: ${stateError}`;
    st.classList.add("bad");
  }
  render();
  setTimeout(poll, POLL_MS);
}

window.addEventListener("hashchange", () => { pageKey = ""; render(); });
poll();
