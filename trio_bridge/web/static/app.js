// The dashboard: the session list (live from /v1/events) and, at #/s/ID, one session's terminal.
import { api, query, ApiError, Unauthorized } from "./api.js";
import { TerminalView } from "./terminal.js";

const $ = (selector) => document.querySelector(selector);
const sessions = new Map(); // "computer/id" -> session
const streams = new Map(); // computer name ("" = this daemon) -> EventSource
let localComputer = "";
let mesh = false;
let terminal = null;
let loggedIn = false;

function key(session) { return `${session.computer}/${session.id}`; }

function shownState(session) {
  if (session.state === "running" && session.agent) return session.agent_state || "unknown";
  return session.state;
}

function age(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function sessionHref(session) {
  const remote = session.computer && session.computer !== localComputer;
  return `#/s/${encodeURIComponent(session.id)}` + (remote ? `?computer=${encodeURIComponent(session.computer)}` : "");
}

function cell(row, label, content) {
  const td = row.insertCell();
  td.dataset.label = label;
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

function matches(session) {
  const state = $("#filter-state").value;
  const computer = $("#filter-computer").value;
  if (computer && session.computer !== computer) return false;
  if (!state) return true;
  if (state === "ended") return session.state !== "running" && session.state !== "starting";
  if (state === "running") return session.state === "running";
  return session.state === "running" && session.agent_state === state;
}

function render() {
  const body = $("#sessions tbody");
  const now = Date.now() / 1000;
  const rows = [...sessions.values()].filter(matches).sort((a, b) => b.created_at - a.created_at);
  body.replaceChildren();
  for (const session of rows) {
    const row = body.insertRow();
    row.dataset.id = session.id;
    row.dataset.computer = session.computer;
    const state = shownState(session);
    if (state === "waiting_for_input") row.className = "waiting";
    const link = document.createElement("a");
    link.href = sessionHref(session);
    link.textContent = session.id;
    cell(row, "Session", link).className = "id";
    cell(row, "Title", session.title || session.command.join(" "));
    cell(row, "Computer", session.computer);
    const badge = document.createElement("span");
    badge.className = `badge ${state}`;
    badge.textContent = state.replaceAll("_", " ");
    cell(row, "State", badge).className = "state";
    cell(row, "Exit", session.exit_code ?? (session.exit_signal ? `signal ${session.exit_signal}` : ""));
    cell(row, "Age", age(now - session.created_at));
    const actions = row.insertCell();
    if (session.state === "running") {
      const kill = document.createElement("button");
      kill.type = "button";
      kill.className = "danger kill";
      kill.textContent = "Kill";
      kill.addEventListener("click", () => confirmKill(session));
      actions.append(kill);
    }
  }
  $("#empty").hidden = rows.length > 0;
  const computers = $("#filter-computer");
  const known = new Set([...computers.options].map((o) => o.value));
  for (const session of sessions.values()) {
    if (!known.has(session.computer)) {
      computers.add(new Option(session.computer, session.computer));
      known.add(session.computer);
    }
  }
}

function confirmKill(session) {
  const dialog = $("#confirm-kill");
  $("#kill-name").textContent = `${session.id}${session.title ? ` (${session.title})` : ""}`;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "kill") return;
    try {
      await api("DELETE", `/v1/sessions/${encodeURIComponent(session.id)}` + remoteQuery(session.computer));
    } catch (error) {
      if (!(error instanceof ApiError && error.code === "session_ended")) showError(error);
    }
  };
  dialog.showModal();
}

function remoteQuery(computer) {
  return computer && computer !== localComputer ? query({ computer }) : "";
}

function setConnection(text, cls) {
  const conn = $("#conn");
  conn.textContent = text;
  conn.className = `conn ${cls}`;
}

function showError(error) {
  if (error instanceof Unauthorized) {
    loggedIn = false;
    terminal?.close();
    terminal = null;
    $("#list-view").hidden = true;
    $("#term-view").hidden = true;
    $("#login-needed").hidden = false;
    $("#logout").hidden = true;
    for (const source of streams.values()) source.close();
    streams.clear();
    setConnection("logged out", "down");
    return;
  }
  setConnection(error.message, "down");
}

function upsert(session) {
  sessions.set(key(session), session);
}

async function loadList() {
  const everywhere = mesh ? { computer: "*" } : {};
  const list = await api("GET", "/v1/sessions" + query(everywhere));
  for (const [k, s] of sessions) if (!list.sessions.some((n) => key(n) === k)) sessions.delete(k);
  for (const session of list.sessions) upsert(session);
  render();
}

function follow(computer) {
  // One event stream per computer: this daemon's, and each other computer's through the mesh.
  streams.get(computer)?.close();
  const source = new EventSource("/v1/events" + (computer ? query({ computer }) : ""));
  streams.set(computer, source);
  const restart = () => {
    source.close();
    if (streams.get(computer) !== source) return;
    setConnection("reconnecting…", "down");
    setTimeout(async () => {
      // An EventSource does not say why it failed: a login that ended stops the retries.
      try {
        await api("GET", "/v1/health");
      } catch (error) {
        if (error instanceof Unauthorized) {
          showError(error);
          return;
        }
      }
      if (streams.get(computer) === source) follow(computer);
    }, 500);
  };
  source.onopen = () => {
    setConnection("live", "live");
    // Events from now on: the list is read again, for what happened while not following.
    loadList().catch(showError);
  };
  source.onerror = restart;
  for (const kind of ["created", "running", "exited", "killed", "lost", "adopted", "agent"]) {
    source.addEventListener(kind, (event) => {
      const data = JSON.parse(event.data);
      const session = data.session;
      if (kind === "agent" && data.agent) session.agent_state = data.agent;
      upsert(session);
      render();
      terminal?.sessionChanged(session);
    });
  }
  source.addEventListener("shutdown", restart);
  source.addEventListener("overflow", restart);
}

async function start() {
  try {
    const computers = await api("GET", "/v1/computers");
    mesh = computers.mesh;
    localComputer = (computers.computers.find((c) => c.local) || {}).name || "";
    $("#login-needed").hidden = true;
    loggedIn = true;
    $("#logout").hidden = false;
    follow("");
    if (mesh) {
      for (const c of computers.computers) if (!c.local && c.online) follow(c.name);
    }
  } catch (error) {
    showError(error);
  }
}

// -- the start form ---------------------------------------------------------------------------

function setupForm() {
  const form = $("#new-form");
  const toggle = $("#new-toggle");
  form.dataset.kind = "command";
  toggle.addEventListener("click", () => {
    form.hidden = !form.hidden;
    toggle.setAttribute("aria-expanded", String(!form.hidden));
  });
  form.addEventListener("change", () => { form.dataset.kind = form.elements.kind.value; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const body = {};
    if (f.kind.value === "agent") {
      body.agent = f.agent.value.trim() || "claude";
      if (f.model.value.trim()) body.model = f.model.value.trim();
      if (f.prompt.value.trim()) body.prompt = f.prompt.value;
    } else if (f.command.value.trim()) {
      body.shell = f.command.value;
    }
    if (f.cwd.value.trim()) body.cwd = f.cwd.value.trim();
    if (f.title.value.trim()) body.title = f.title.value.trim();
    const status = $("#new-status");
    status.textContent = "starting…";
    try {
      const session = await api("POST", "/v1/sessions", body);
      upsert(session);
      render();
      status.textContent = `started ${session.id}`;
      form.reset();
      form.dataset.kind = "command";
    } catch (error) {
      status.textContent = error.message;
    }
  });
}

// -- routing ----------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/s\/([^?]+)(?:\?computer=(.+))?$/);
  terminal?.close();
  terminal = null;
  if (!loggedIn) return;
  $("#list-view").hidden = Boolean(match);
  $("#term-view").hidden = !match;
  if (!match) {
    render();
    return;
  }
  const id = decodeURIComponent(match[1]);
  const computer = match[2] ? decodeURIComponent(match[2]) : "";
  const known = sessions.get(`${computer || localComputer}/${id}`);
  const remote = Boolean(computer && computer !== localComputer);
  terminal = new TerminalView({ id, computer, remote, session: known, onUnauthorized: showError });
  terminal.open().catch(showError);
}

setupForm();
$("#logout").addEventListener("click", async () => {
  await api("POST", "/logout").catch(() => null);
  showError(new Unauthorized("logged out"));
});
$("#filter-state").addEventListener("change", render);
$("#filter-computer").addEventListener("change", render);
setInterval(() => { if (!$("#list-view").hidden) render(); }, 5000);
window.addEventListener("hashchange", route);
start().then(route);
