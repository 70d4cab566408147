// One session's terminal: xterm.js at the session's size, seeded with its screen (colours
// included), then following its output by byte offset. A reconnect resumes at the offset the
// terminal has reached: nothing is shown twice and the screen is never blanked.
import { Terminal } from "./vendor/xterm.mjs";
import { FitAddon } from "./vendor/addon-fit.mjs";
import { api, query, ApiError, Unauthorized } from "./api.js";

const $ = (selector) => document.querySelector(selector);
const encoder = new TextEncoder();

export class TerminalView {
  constructor({ id, computer, remote, session, onUnauthorized }) {
    this.onUnauthorized = onUnauthorized;
    this.id = id;
    this.computer = computer;
    this.remote = remote; // another computer's session: read-only, through SSE
    this.session = session || null;
    this.offset = null; // the output offset the terminal shows everything before
    this.socket = null;
    this.source = null;
    this.closed = false;
    this.ended = false;
    this.retry = 250;
    this.typing = false;
  }

  path(suffix) {
    return `/v1/sessions/${encodeURIComponent(this.id)}${suffix}`;
  }

  async open() {
    const box = $("#terminal");
    box.replaceChildren();
    this.term = new Terminal({
      cols: 80, rows: 24, scrollback: 5000, convertEol: false, disableStdin: false,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace", fontSize: 14,
      theme: { background: "#000000" },
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(box);
    window.trioBridgeTerminal = this.term; // for tests and the browser's console
    this.term.onData((data) => this.type(data));
    this.onResize = () => this.scaleFont();
    window.addEventListener("resize", this.onResize);
    this.setupControls();
    this.showSession();
    await this.connect();
  }

  close() {
    this.closed = true;
    this.socket?.close(1000);
    this.source?.close();
    window.removeEventListener("resize", this.onResize);
    this.term?.dispose();
    $("#type-toggle").onchange = null;
    $("#prompt-form").onsubmit = null;
    $("#keybar").onclick = null;
  }

  setupControls() {
    const toggle = $("#type-toggle");
    toggle.checked = false;
    toggle.disabled = this.remote;
    toggle.onchange = () => {
      this.typing = toggle.checked;
      $("#keybar").hidden = !this.typing;
      if (this.typing) this.term.focus();
    };
    $("#keybar").hidden = true;
    $("#keybar").onclick = (event) => {
      const key = event.target.closest("button")?.dataset.key;
      if (key && this.typing) this.send(JSON.stringify({ type: "keys", keys: [key] }));
    };
    const form = $("#prompt-form");
    form.onsubmit = (event) => {
      event.preventDefault();
      this.prompt($("#prompt-text").value);
    };
    $("#prompt-status").textContent = "";
  }

  showSession() {
    const s = this.session;
    $("#term-title").textContent = s ? `${s.id} ${s.title || s.command.join(" ")}` : this.id;
    const state = !s ? "" : s.state === "running" && s.agent ? s.agent_state || "unknown" : s.state;
    $("#term-state").textContent = state.replaceAll("_", " ");
    $("#term-state").className = `badge ${state}`;
    $("#prompt-form").hidden = !(s && s.agent && s.state === "running");
  }

  sessionChanged(session) {
    if (session.id !== this.id || (this.computer && session.computer !== this.computer)) return;
    this.session = session;
    this.showSession();
  }

  // The session's screen as it is now, with colours, at its size; the cursor where it is.
  async seed() {
    const screen = await api("GET", this.path("/screen") + query({ escapes: "true", computer: this.remoteComputer() }));
    this.term.reset();
    if (screen.size) this.term.resize(screen.size[0], screen.size[1]);
    const lines = screen.text.replace(/\n$/, "").split("\n");
    this.term.write(lines.join("\r\n") + "\x1b[0m");
    if (screen.cursor) this.term.write(`\x1b[${screen.cursor[1] + 1};${screen.cursor[0] + 1}H`);
    // Followed from where the screen was taken (an ended session's kept screen has no offset).
    this.offset = screen.offset ?? null;
    this.scaleFont();
  }

  remoteComputer() {
    return this.remote ? this.computer : undefined;
  }

  // The font size that shows all of the session's columns in the box (never resizing the session).
  scaleFont() {
    const box = $("#terminal-box");
    if (!this.term || !box) return;
    const cell = this.term.element?.querySelector(".xterm-screen");
    const width = box.clientWidth - 8;
    if (!cell || width <= 0) return;
    const perColumn = cell.clientWidth / this.term.cols;
    if (!perColumn) return;
    const size = this.term.options.fontSize;
    const wanted = Math.max(6, Math.min(14, Math.floor(size * width / (perColumn * this.term.cols))));
    if (wanted !== size) this.term.options.fontSize = wanted;
  }

  // Seeded from the screen the first time (and after a resync), then output from the offset
  // reached. Another computer's output is replayed from its start instead (SSE, by offset).
  async connect() {
    if (this.closed || this.ended) return;
    if (this.remote) {
      this.follow();
      return;
    }
    if (this.offset === null) {
      try {
        await this.seed();
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) throw error;
        this.reconnectLater();
        return;
      }
    }
    this.openSocket();
  }

  reconnectLater() {
    if (this.closed || this.ended) return;
    $("#conn").textContent = "terminal reconnecting…";
    setTimeout(async () => {
      // A refused handshake does not say why: a login that ended stops the retries.
      try {
        await api("GET", "/v1/health");
      } catch (error) {
        if (error instanceof Unauthorized) {
          this.onUnauthorized?.(error);
          return;
        }
      }
      this.connect();
    }, this.retry);
    this.retry = Math.min(this.retry * 2, 2000);
  }

  openSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const offset = this.offset === null ? "end" : String(this.offset);
    const socket = new WebSocket(`${scheme}//${location.host}${this.path("/ws")}?offset=${offset}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onmessage = (event) => {
      if (event.data instanceof ArrayBuffer) {
        this.offset += event.data.byteLength;
        this.term.write(new Uint8Array(event.data));
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "hello") {
        this.offset = message.offset;
        this.retry = 250;
        $("#terminal-box").dataset.state = "live";
        this.sessionChanged({ ...message.session, computer: message.session.computer });
      } else if (message.type === "resync") {
        // Output before message.offset was dropped (retention): start again from the screen
        // (its offset is past the one the stream goes on from: the overlap is not shown twice).
        this.offset = null;
        socket.close();
      } else if (message.type === "end") {
        this.ended = true;
        this.sessionChanged(message.session);
      } else if (message.type === "error") {
        $("#prompt-status").textContent = message.message;
      }
    };
    socket.onclose = () => {
      if (this.socket === socket) this.socket = null;
      $("#terminal-box").dataset.state = this.ended ? "ended" : "away";
      this.reconnectLater();
    };
  }

  // Another computer's session: output as Server-Sent Events, forwarded through the mesh.
  follow() {
    const source = new EventSource(this.path("/stream") + query({ computer: this.computer, offset: this.offset ?? undefined }));
    this.source = source;
    source.addEventListener("output", (event) => {
      const data = JSON.parse(event.data);
      if (this.offset === null || data.offset >= this.offset) {
        this.term.write(data.data);
        this.offset = Number(event.lastEventId);
      }
    });
    source.addEventListener("end", () => { this.ended = true; source.close(); });
    source.onerror = () => { source.close(); this.reconnectLater(); };
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(message);
  }

  type(data) {
    if (this.typing && !this.remote) this.send(encoder.encode(data));
  }

  async prompt(text) {
    const status = $("#prompt-status");
    if (!text.trim()) return;
    status.textContent = "sending…";
    try {
      await api("POST", this.path("/prompt") + query({ computer: this.remoteComputer() }), { text });
      status.textContent = "✓ confirmed: the agent took the prompt";
      status.className = "confirmed";
      $("#prompt-text").value = "";
    } catch (error) {
      status.className = "unconfirmed";
      status.textContent = error instanceof ApiError && error.code === "prompt_not_confirmed"
        ? "✗ not confirmed: it may not have been submitted"
        : `✗ ${error.message}`;
    }
  }
}
