// The live situation map: polygons drawn once (GET /v1/grids/shapes), colours from conditional polls of
// GET /v1/grids/risk?since=<version> (If-None-Match: 304 when nothing changed), alerts over SSE.
"use strict";

const LEVELS = ["red", "orange", "yellow", "green"]; // worst first, as a legend reads
const COLOURS = { red: "#e03131", orange: "#f76707", yellow: "#fcc419", green: "#2f9e44" };
const LEVEL_NAMES = {
  red: "红 严重 Severe", orange: "橙 突出 Prominent", yellow: "黄 关注 Attention", green: "绿 正常 Normal",
};
const SOURCE_NAMES = {
  call110: "110接处警 110 calls", camera: "视频分析 Cameras", checkpoint: "检查站 Checkpoints",
  app_report: "平安APP App reports",
};
const UNIT_FIELDS = {
  community: "community_id", subdistrict: "subdistrict_id", district: "district_id",
  police_station: "police_station_id",
};
const POLL_MS = 2000;
const STALE_MS = 8000;
const MAX_ALERTS = 50;

const state = {
  shapes: [], // registry order: {grid_id, name, ring, *_id}
  grids: new Map(), // grid_id -> risk item of the last poll
  units: new Map(), // unit_id -> rolled-up risk (when the roll-up is not "grid")
  version: null,
  etag: null,
  summary: null,
  rollup: "grid",
  lastOk: 0,
  lastError: "",
  pollTimer: null,
  selected: null,
  me: null, // GET /v1/me: the key's name, role, scope
  incidents: [], // active incidents of the scope (GET /v1/incidents?status=active)
};
const INCIDENT_POLL_MS = 3000;
const STATUS_NAMES = {
  open: "待确认 open", acknowledged: "已确认 acknowledged", dispatched: "已派遣 dispatched",
  resolved: "已办结 resolved", merged: "已合并 merged",
};
const SCOPE_NAMES = { community: "社区 community", subdistrict: "街道 subdistrict", district: "区 district" };
const ACTION_NAMES = {
  acknowledge: "确认 Acknowledge", dispatch: "派遣 Dispatch", resolve: "办结 Resolve", note: "备注 Note",
  reopen: "重开 Reopen",
};
// Which buttons an incident in each state offers (the API refuses the others with 409).
const ACTIONS_FOR = {
  open: ["acknowledge", "dispatch", "resolve", "note"],
  acknowledged: ["dispatch", "resolve", "note"],
  dispatched: ["resolve", "note"],
  resolved: ["reopen", "note"],
  merged: ["reopen", "note"],
};
const OUTCOMES = ["handled", "false_alarm", "referred", "no_action_needed"];

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const fmt = (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString("zh-CN", { hour12: false }) : "–");

function apiKey() {
  return window.localStorage.getItem("pingan.apiKey") || "";
}

function withKey(headers = {}) {
  const key = apiKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

class HttpError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

async function getJSON(path) {
  const response = await fetch(path, { headers: withKey(), cache: "no-store" });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not a problem document */ }
    throw new HttpError(response.status, detail);
  }
  return response.json();
}

// --- the map -------------------------------------------------------------------------------------------

const tooltip = document.createElement("div");
tooltip.className = "tooltip";
tooltip.hidden = true;
$("map").appendChild(tooltip);

const gridMap = new GridMap($("map"), {
  colours: COLOURS,
  onClick: (grid) => openGrid(state.shapes[grid].grid_id),
  onHover: (grid, x, y) => {
    if (grid < 0) { tooltip.hidden = true; return; }
    const shape = state.shapes[grid];
    const risk = state.grids.get(shape.grid_id);
    const level = levelOf(shape);
    tooltip.innerHTML = `${shape.name}<br>${LEVEL_NAMES[level]} · ${fmt(risk ? risk.score : 0)}`;
    tooltip.style.left = `${x + 12}px`;
    tooltip.style.top = `${y + 12}px`;
    tooltip.hidden = false;
  },
});
const historyChart = echarts.init($("history-chart"), null, { renderer: "canvas" });
window.addEventListener("resize", () => historyChart.resize());

async function loadShapes() {
  const body = await getJSON("/v1/grids/shapes");
  state.shapes = body.grids;
  state.position = new Map(body.grids.map((shape, i) => [shape.grid_id, i]));
  gridMap.setShapes(body.grids);
}

function levelOf(shape) {
  if (state.rollup === "grid") {
    const grid = state.grids.get(shape.grid_id);
    return grid ? grid.level : "green";
  }
  const unit = state.units.get(shape[UNIT_FIELDS[state.rollup]]);
  return unit ? unit.level : "green";
}

function paint() {
  gridMap.setLevels(state.shapes.map(levelOf));
  paintLegend();
  window.pinganMap.paintedVersion = state.version;
}

function paintLegend() {
  const counts = { red: 0, orange: 0, yellow: 0, green: 0 };
  if (state.rollup === "grid" && state.summary) {
    Object.assign(counts, state.summary.levels);
  } else {
    for (const unit of state.units.values()) counts[unit.level] += 1;
  }
  const noun = state.rollup === "grid" ? "网格 grids" : "单位 units";
  $("legend").innerHTML = LEVELS.map((level) =>
    `<li data-level="${level}"><span class="swatch" style="background:${COLOURS[level]}"></span>` +
    `${LEVEL_NAMES[level]} <b class="count">${counts[level]}</b></li>`).join("") + `<li>${noun}</li>`;
}

async function loadUnits() {
  if (state.rollup === "grid") return;
  const body = await getJSON(`/v1/units/${state.rollup}/risk`);
  state.units = new Map(body.units.map((unit) => [unit.unit_id, unit]));
}

// One conditional poll: a delta since the version we hold (or everything the first time).
async function poll() {
  let changed = false;
  try {
    const url = state.version === null ? "/v1/grids/risk" : `/v1/grids/risk?since=${state.version}`;
    const headers = withKey(state.etag ? { "If-None-Match": state.etag } : {});
    const response = await fetch(url, { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) throw new HttpError(response.status, "API key needed");
    if (response.status !== 304) {
      if (!response.ok) throw new HttpError(response.status, response.statusText);
      const body = await response.json();
      if (body.full) state.grids.clear();
      for (const grid of body.grids) state.grids.set(grid.grid_id, grid);
      state.version = body.summary.version;
      state.etag = response.headers.get("ETag");
      state.summary = body.summary;
      changed = body.full || body.grids.length > 0;
    }
    if (changed) {
      await loadUnits();
      paint();
      loadHotspots();
    }
    state.lastOk = Date.now();
    state.lastError = "";
  } catch (error) {
    state.lastError = String(error.message || error);
    if (error.status === 401 || error.status === 403) askForKey();
  }
  showStatus();
  schedulePoll(POLL_MS);
}

function schedulePoll(ms) {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, ms);
}

function showStatus() {
  const age = Date.now() - state.lastOk;
  const stale = state.lastOk === 0 || age > STALE_MS || state.lastError;
  const banner = $("stale");
  if (stale && state.summary) {
    banner.hidden = false;
    banner.textContent = `数据可能已过期 Data may be stale — 最后更新 last update ${new Date(state.lastOk)
      .toLocaleTimeString("zh-CN", { hour12: false })} (${state.lastError || "no answer"})`;
  } else {
    banner.hidden = true;
  }
  $("status").textContent = state.summary
    ? `版本 version ${state.summary.version} · 评估至 as of ${clock(state.summary.as_of)}`
    : `连接中… Connecting… ${state.lastError}`;
}
setInterval(showStatus, 1000);

// --- side panels ---------------------------------------------------------------------------------------

async function loadHotspots() {
  try {
    const body = await getJSON("/v1/hotspots?limit=10");
    $("hotspots").innerHTML = body.hotspots.map((grid) =>
      `<li class="clickable level-${grid.level}" data-grid="${grid.grid_id}">${grid.name} ` +
      `<small>${grid.grid_id}</small> · ${fmt(grid.score)} · ${SOURCE_NAMES[grid.dominant_source] || grid.dominant_source || ""}</li>`,
    ).join("") || "<li>无 none</li>";
  } catch (_) { /* the stale banner already says the API is unreachable */ }
}
$("hotspots").addEventListener("click", (event) => {
  const item = event.target.closest("[data-grid]");
  if (item) openGrid(item.dataset.grid);
});

function explain(detail) {
  const risk = detail.risk;
  const why = detail.explanation;
  if (!why || !why.sources || why.sources.length === 0) {
    return "近一小时无事件，正常。No events in the last hour: normal.";
  }
  const top = why.sources[0];
  const source = SOURCE_NAMES[top.source] || top.source;
  let text = `主要来源 ${source}：加权观测 ${fmt(top.observed)}，按该时段常态预期 ${fmt(top.expected)}` +
    `（分项指数 ${fmt(top.sub_index)}）。Driven by ${top.source}: observed ${fmt(top.observed)} ` +
    `weighted events against ${fmt(top.expected)} expected for this hour of the week.`;
  if (why.held_by_hysteresis) {
    text += ` 颜色由近期已关闭窗口保持（实时等级 ${LEVEL_NAMES[why.live_level] || why.live_level}）。` +
      `The colour is held by recent closed windows (live level ${why.live_level}).`;
  }
  if (risk.spatial && risk.spatial.lift > 0) {
    text += ` 相邻网格同样偏高，空间提升 +${fmt(risk.spatial.lift)}。Lifted +${fmt(risk.spatial.lift)} because neighbours are hot too.`;
  }
  return text;
}

async function openGrid(gridId) {
  state.selected = gridId;
  gridMap.select(state.position.has(gridId) ? state.position.get(gridId) : -1);
  const panel = $("detail");
  try {
    const detail = await getJSON(`/v1/grids/${encodeURIComponent(gridId)}`);
    const risk = detail.risk;
    $("detail-title").textContent = `${detail.name} (${gridId})`;
    $("detail-summary").innerHTML = `<b class="level-${risk.level}">${LEVEL_NAMES[risk.level]}</b> · ` +
      `得分 score ${fmt(risk.score)} · 主要来源 dominant ${SOURCE_NAMES[risk.dominant_source] || risk.dominant_source || "–"}` +
      ` · 评估至 as of ${clock(risk.as_of)}`;
    $("detail-explanation").textContent = explain(detail);
    const sources = (detail.explanation && detail.explanation.sources) || [];
    $("detail-sources").querySelector("tbody").innerHTML = sources.map((s) =>
      `<tr><td>${SOURCE_NAMES[s.source] || s.source}</td><td>${fmt(s.observed)}</td><td>${fmt(s.expected)}</td>` +
      `<td>${fmt(s.sub_index)}</td></tr>`).join("");
    panel.hidden = false;
    panel.dataset.grid = gridId;
    const history = await getJSON(`/v1/grids/${encodeURIComponent(gridId)}/history?step=300`);
    historyChart.resize();
    historyChart.setOption({
      animation: false,
      grid: { left: 36, right: 8, top: 16, bottom: 24 },
      tooltip: { trigger: "axis" },
      xAxis: { type: "time", min: history.start, max: history.end },
      yAxis: { type: "value", name: "score", min: 0 },
      series: [{
        type: "line", name: "score", showSymbol: history.windows.length < 30, step: "end",
        data: history.windows.map((w) => [w.start, w.max_score]),
        lineStyle: { color: "#74c0fc" }, areaStyle: { color: "rgba(116,192,252,0.2)" },
      }],
    }, true);
    panel.dataset.historyPoints = String(history.windows.length);
    await renderGridIncidents(gridId);
  } catch (error) {
    $("detail-title").textContent = gridId;
    $("detail-summary").textContent = `无法加载 could not load: ${error.message}`;
    panel.hidden = false;
  }
}
$("detail-close").addEventListener("click", () => {
  $("detail").hidden = true;
  state.selected = null;
  gridMap.select(-1);
});

function addAlert(alert) {
  const list = $("alerts");
  const item = document.createElement("li");
  item.className = `clickable level-${alert.level}`;
  item.dataset.grid = alert.grid_id;
  item.dataset.kind = alert.kind;
  if (alert.kind === "unacknowledged") {
    const to = alert.explanation ? alert.explanation.to_level : "";
    item.textContent = `${clock(alert.as_of)} ${alert.grid_id} 未确认，升级至 unacknowledged, up to ${SCOPE_NAMES[to] || to}`;
  } else {
    const verb = alert.kind === "escalation" ? "升至 up to" : "降至 down to";
    item.textContent = `${clock(alert.as_of)} ${alert.grid_id} ${verb} ${LEVEL_NAMES[alert.level]} (${fmt(alert.score)})`;
  }
  list.prepend(item);
  while (list.children.length > MAX_ALERTS) list.lastChild.remove();
  schedulePoll(0); // the map shows the escalation with the alert, not a poll later
  loadIncidents();
}
$("alerts").addEventListener("click", (event) => {
  const item = event.target.closest("[data-grid]");
  if (item) openGrid(item.dataset.grid);
});

// --- incidents: the scope's open ones marked on the map, and actions on a grid's incidents --------------

const escapeHtml = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function loadMe() {
  try {
    state.me = await getJSON("/v1/me");
    const scope = state.me.scope;
    $("scope").textContent = scope
      ? `${state.me.name} · ${SCOPE_NAMES[scope.level] || scope.level} ${scope.name} (${scope.grids})`
      : `${state.me.name} · 全部网格 All grids`;
  } catch (_) { /* the stale banner already says the API is unreachable */ }
}

async function loadIncidents() {
  try {
    const body = await getJSON("/v1/incidents?status=active&limit=200");
    state.incidents = body.incidents;
    gridMap.setMarked(body.incidents.filter((i) => state.position.has(i.grid_id))
      .map((i) => state.position.get(i.grid_id)));
    $("incidents-status").textContent = `${body.count}`;
    $("incidents").innerHTML = body.incidents.map((i) =>
      `<li class="clickable level-${i.level}" data-grid="${i.grid_id}" data-incident="${escapeHtml(i.incident_id)}" ` +
      `data-status="${i.status}">${clock(i.opened_at)} ${i.grid_id} · ${STATUS_NAMES[i.status]}` +
      `${i.escalated ? ` · <span class="escalated">已升级 escalated → ${SCOPE_NAMES[i.responsible.level]}</span>` : ""}</li>`,
    ).join("") || "<li>无 none</li>";
  } catch (_) { /* shown by the stale banner */ }
}
$("incidents").addEventListener("click", (event) => {
  const item = event.target.closest("[data-grid]");
  if (item) openGrid(item.dataset.grid);
});

function incidentHtml(incident) {
  const buttons = state.me && state.me.may_act
    ? (ACTIONS_FOR[incident.status] || []).map((kind) =>
      `<button type="button" data-action="${kind}">${ACTION_NAMES[kind]}</button>`).join("")
    : "<small>此密钥只读 this key reads only</small>";
  const history = incident.history.map((h) =>
    `<li class="${h.applied ? "" : "refused"}" data-action-id="${escapeHtml(h.action_id)}" data-kind="${h.kind}">` +
    `${clock(h.at)} ${escapeHtml(h.actor)} ${ACTION_NAMES[h.kind] || h.kind}` +
    `${h.assignee ? ` → ${escapeHtml(h.assignee)}` : ""}${h.outcome ? ` (${h.outcome})` : ""}` +
    `${h.note ? `: ${escapeHtml(h.note)}` : ""}${h.applied ? "" : ` — ${escapeHtml(h.reason)}`}</li>`).join("");
  const escalations = incident.escalations.map((e) =>
    `<li class="escalated">${clock(e.at)} 未确认升级 unacknowledged → ${SCOPE_NAMES[e.to_level]} ${e.unit_id}</li>`).join("");
  return `<div class="incident" data-incident="${escapeHtml(incident.incident_id)}" data-status="${incident.status}">` +
    `<b class="level-${incident.level}">${STATUS_NAMES[incident.status]}</b> · 开启 opened ${clock(incident.opened_at)}` +
    ` · 责任 responsible ${SCOPE_NAMES[incident.responsible.level]} ${incident.responsible.unit_id}` +
    `<div class="actions">${buttons}</div><ol>${escalations}${history}</ol>` +
    `<small class="action-error"></small></div>`;
}

async function renderGridIncidents(gridId) {
  const box = $("detail-incidents");
  const listed = await getJSON(`/v1/incidents?grid_id=${encodeURIComponent(gridId)}&limit=3`);
  const details = await Promise.all(listed.incidents.map((i) =>
    getJSON(`/v1/alerts/${encodeURIComponent(i.incident_id)}`).then((alert) => alert.incident)));
  box.innerHTML = details.filter(Boolean).map(incidentHtml).join("") || "<p>无事件 no incidents</p>";
}

// One action; the same action_id on a retry, so an answer lost on the way is not stored twice.
async function act(incidentId, kind) {
  const body = { kind, action_id: (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`) };
  if (kind === "dispatch") {
    body.assignee = window.prompt("派遣给 Dispatch to (unit or grid worker):", "");
    if (!body.assignee) return;
  }
  if (kind === "resolve") {
    body.outcome = window.prompt(`结果 Outcome (${OUTCOMES.join(", ")}):`, "handled");
    if (!body.outcome) return;
  }
  if (kind === "resolve" || kind === "note" || kind === "reopen") {
    body.note = window.prompt(kind === "resolve" ? "反馈 Feedback:" : "备注 Note:", "") || "";
    if (kind !== "reopen" && !body.note) return;
  }
  for (let attempt = 0; attempt < 3; attempt += 1) {
    let response;
    try {
      response = await fetch(`/v1/alerts/${encodeURIComponent(incidentId)}/actions`, {
        method: "POST", headers: withKey({ "Content-Type": "application/json" }), body: JSON.stringify(body),
      });
    } catch (_) {
      await sleep(1000); // no answer: send the same action again
      continue;
    }
    if (response.ok) break;
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not a problem document */ }
    if (response.status !== 503) {
      const box = document.querySelector(`.incident[data-incident="${CSS.escape(incidentId)}"] .action-error`);
      if (box) box.textContent = detail;
      return;
    }
    await sleep(1000);
  }
  if (state.selected) await renderGridIncidents(state.selected);
  loadIncidents();
}
$("detail-incidents").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  act(button.closest(".incident").dataset.incident, button.dataset.action);
});

// Server-Sent Events read with fetch (EventSource cannot send an API key); reconnects with Last-Event-ID.
async function streamAlerts() {
  let lastId = null;
  for (;;) {
    try {
      const headers = withKey({ Accept: "text/event-stream" });
      if (lastId) headers["Last-Event-ID"] = lastId;
      // The newest alerts first (not the whole history), then new ones; a reconnect resumes after lastId.
      const response = await fetch(`/v1/alerts/stream?tail=${MAX_ALERTS}`, { headers, cache: "no-store" });
      if (!response.ok) throw new HttpError(response.status, response.statusText);
      $("alerts-status").textContent = "● 实时 live";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = {};
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart();
          }
          if (fields.id) lastId = fields.id;
          if (fields.event === "alert" && fields.data) addAlert(JSON.parse(fields.data));
        }
      }
    } catch (_) { /* reconnect below */ }
    $("alerts-status").textContent = "○ 重连中 reconnecting";
    await sleep(2000);
  }
}

async function loadIndex() {
  const period = $("index-period").value;
  const unit = $("index-unit").value;
  const body = $("index-table").querySelector("tbody");
  try {
    const index = await getJSON(`/v1/index/${period}?unit=${unit}`);
    $("index-period-label").textContent = `${index.period_start} – ${index.period_end}`;
    body.innerHTML = index.units.map((u) =>
      `<tr><td>${u.rank}</td><td>${u.unit_name || u.unit_id}</td><td>${fmt(u.score)}</td><td>${fmt(u.change)}</td>` +
      `<td>${u.flagged ? "戴帽 flagged" : ""} ${u.flag_change === "left" ? "摘帽 unflagged" : ""}</td></tr>`).join("");
  } catch (error) {
    $("index-period-label").textContent = "";
    body.innerHTML = `<tr><td colspan="5">${error.status === 404 ? "尚未发布 not published yet" : error.message}</td></tr>`;
  }
}
$("index-period").addEventListener("change", loadIndex);
$("index-unit").addEventListener("change", loadIndex);

$("rollup").addEventListener("change", async (event) => {
  state.rollup = event.target.value;
  try { await loadUnits(); } catch (error) { state.lastError = error.message; }
  paint();
});

function askForKey() {
  if (askForKey.asked) return;
  askForKey.asked = true;
  const key = window.prompt("API 密钥 API key (a dashboard key reads; an operator key of a centre acts on incidents):",
    apiKey());
  if (key !== null) {
    window.localStorage.setItem("pingan.apiKey", key.trim());
    window.location.reload(); // another key may mean another scope: start again with its shapes
  }
  askForKey.asked = false;
}
$("key-button").addEventListener("click", askForKey);

// For the browser test and for operators' consoles: where a place is drawn, and what the map shows.
window.pinganMap = {
  gridMap,
  state,
  paintedVersion: null,
  colours: COLOURS,
  toScreen: (lon, lat) => gridMap.toScreen(lon, lat),
  levelOf: (gridId) => (state.position.has(gridId) ? gridMap.levels[state.position.get(gridId)] : null),
  markedGrids: () => gridMap.marked.map((i) => state.shapes[i].grid_id),
};

async function start() {
  for (;;) {
    try { await loadShapes(); break; } catch (error) {
      state.lastError = error.message;
      if (error.status === 401 || error.status === 403) askForKey();
      showStatus();
      await sleep(2000);
    }
  }
  await loadMe();
  poll();
  loadIncidents();
  setInterval(loadIncidents, INCIDENT_POLL_MS);
  streamAlerts();
  loadIndex();
  setInterval(loadIndex, 60000);
}
start();
