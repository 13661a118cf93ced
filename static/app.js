// wasm-exec-api playground: plain JavaScript, no dependencies, served from
// the binary. Talks to the same JSON API as any client.
"use strict";

const DOUBLE = `(module
  (func (export "double") (param i32) (result i32)
    (i32.mul (local.get 0) (i32.const 2))))`;

const EXAMPLES = [
  { name: "double (the origin's example)", wat: DOUBLE, fn: "double", params: ["2"] },
  {
    name: "linking: double_twice imports utils.double",
    wat: `;; Imports "double" from the registered module "utils".
;; Run registers the double example as "utils" first if it is missing.
(module
  (import "utils" "double" (func $double (param i32) (result i32)))
  (func (export "double_twice") (param i32) (result i32)
    (call $double (call $double (local.get 0)))))`,
    fn: "double_twice", params: ["5"], hosts: "utils",
    requires: { name: "utils", wat: DOUBLE },
  },
  {
    name: "WASI hello world",
    wat: `;; A WASI command: _start writes to stdout with fd_write.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from WASI!\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))  ;; iovec.buf
    (i32.store (i32.const 4) (i32.const 17))  ;; iovec.len
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))`,
    fn: "_start", params: [], wasi: true,
  },
  {
    name: "environment: a writer that exposes its memory",
    wat: `;; Add this to an environment with "as": shared, then add the reader example.
(module
  (memory (export "mem") 1)
  (func (export "put") (param i32 i32) (i32.store (local.get 0) (local.get 1))))`,
    fn: "put", params: ["16", "42"], member: { name: "writer", as: "shared" },
  },
  {
    name: "environment: a reader of the shared memory",
    wat: `;; Imports the memory of the instance exposed as "shared" in the environment.
(module
  (import "shared" "mem" (memory 1))
  (func (export "get") (param i32) (result i32) (i32.load (local.get 0))))`,
    fn: "get", params: ["16"], member: { name: "reader", as: "" },
  },
  {
    name: "floats: NaN, Infinity, -0.0 survive",
    wat: `(module
  (func (export "div") (param f64 f64) (result f64)
    (f64.div (local.get 0) (local.get 1))))`,
    fn: "div", params: ["1", "-0.0"],
  },
  {
    name: "i64: exact factorial",
    wat: `(module
  (func (export "fact") (param i64) (result i64)
    (if (result i64) (i64.le_u (local.get 0) (i64.const 1))
      (then (i64.const 1))
      (else (i64.mul (local.get 0)
                     (call 0 (i64.sub (local.get 0) (i64.const 1))))))))`,
    fn: "fact", params: ["20"],
  },
  {
    name: "component: WIT-typed u64 and bool exports",
    wat: `;; A component (the component model): its exports have WIT types.
;; One input per param is made from its WIT params.
(component
  (core module $m
    (func (export "add") (param i64 i64) (result i64)
      (i64.add (local.get 0) (local.get 1)))
    (func (export "is-even") (param i64) (result i32)
      (i64.eqz (i64.and (local.get 0) (i64.const 1)))))
  (core instance $i (instantiate $m))
  (func (export "add") (param "a" u64) (param "b" u64) (result u64)
    (canon lift (core func $i "add")))
  (func (export "is-even") (param "x" u64) (result bool)
    (canon lift (core func $i "is-even"))))`,
    fn: "add", params: ["40", "2"],
  },
];

const $ = (id) => document.getElementById(id);
const state = {
  source: { kind: "wat", text: DOUBLE },   // or { kind: "wasm", base64, name, size }
  target: null,                            // null: the editor; else a registered module name
  exports: [],                             // function exports of the current target
  imports: [],
  pending: null,                           // example chosen, to preset function and params
  requires: null,
  env: null,                               // the playground's environment id, once made
  member: null,                            // an environment instance's name, when it is the target
};

// ---- HTTP -----------------------------------------------------------------

function headers() {
  const h = { "content-type": "application/json" };
  const token = $("token").value.trim();
  if (token) h.authorization = `Bearer ${token}`;
  return h;
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, body: { error: { code: "network", message: `cannot reach the server: ${e.message}` } } };
  }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = { raw: text }; }
  return { status: response.status, body: parsed };
}

function codeFields() {
  return state.source.kind === "wasm" ? { wasm_base64: state.source.base64 } : { wat: $("editor").value };
}

// ---- Rendering helpers ----------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function errorBox(body, status) {
  const e = (body && body.error) || { code: "unknown", message: JSON.stringify(body) };
  const box = el("div", { class: "error", role: "alert" },
    el("div", { class: "error-head" }, `${status || ""} ${e.code}`),
    el("div", {}, e.message));
  const extra = Object.entries(e).filter(([k]) => !["code", "message"].includes(k));
  if (extra.length) box.append(el("pre", {}, JSON.stringify(Object.fromEntries(extra), null, 2)));
  return box;
}

// ---- Module interface -------------------------------------------------------

function setInterface(iface) {
  // A component's exports carry WIT types and param names; a module's,
  // WebAssembly value types.
  state.exports = iface.kind === "component"
    ? (iface.exports || []).map((e) => ({ name: e.name, type: e.signature,
        params: e.params.map((p) => p.type), names: e.params.map((p) => p.name) }))
    : (iface.exports || []).filter((e) => e.kind === "func");
  state.imports = iface.imports || [];
  const select = $("function");
  const previous = select.value;
  select.replaceChildren(...state.exports.map((e) =>
    el("option", { value: e.name }, `${e.name} ${e.type}`)));
  const wanted = state.pending ? state.pending.fn : previous;
  if (state.exports.some((e) => e.name === wanted)) select.value = wanted;
  const usesWasi = state.imports.some((i) => (i.module && i.module.startsWith("wasi_"))
    || (i.name && i.name.startsWith("wasi:")));
  if (usesWasi) $("wasi").checked = true;
  renderParams();
  if (state.pending) {
    state.pending.params.forEach((p, i) => { const input = $(`param-${i}`); if (input) input.value = p; });
    state.pending = null;
  }
}

function currentExport() {
  return state.exports.find((e) => e.name === $("function").value);
}

function renderParams() {
  const fn = currentExport();
  const box = $("params");
  box.replaceChildren();
  if (!fn) return;
  (fn.params || []).forEach((type, i) => {
    const hint = { i32: "e.g. 42", i64: "exact, e.g. 9007199254740993", f32: "e.g. 1.5, NaN, -0.0",
      f64: "e.g. 0.1, Infinity, -0.0", v128: "32 hex digits", bool: "true or false", string: "text",
      char: "one character", u64: "exact, e.g. 18446744073709551615", s64: "exact, e.g. -9223372036854775808" }[type]
      || witHint(type);
    const label = fn.names ? fn.names[i] : `p${i}`;
    box.append(el("label", { class: "param" }, `${label}: `, el("span", { class: "type" }, type),
      el("input", { id: `param-${i}`, "data-type": type, placeholder: hint, "aria-label": `param ${i} (${type})` })));
  });
  if (!(fn.params || []).length) box.append(el("div", { class: "muted" }, "no params"));
}

/** What to type for a compound WIT type (docs/API.md, "Component values"). */
function witHint(type) {
  if (type.startsWith("record")) return 'JSON object, e.g. {"field": 1}';
  if (type.startsWith("list") || type.startsWith("tuple") || type.startsWith("flags")) return "JSON array, e.g. [1, 2]";
  if (type.startsWith("variant")) return 'case name, or {"case": value}';
  if (type.startsWith("enum")) return "case name";
  if (type.startsWith("option")) return "null, or the value";
  if (type.startsWith("result")) return '{"ok": value} or {"err": value}';
  return "JSON value";
}

let inspectTimer = null;
function scheduleInspect() {
  clearTimeout(inspectTimer);
  inspectTimer = setTimeout(inspect, 300);
}

async function inspect() {
  if (state.target) return;
  const { status, body } = await api("POST", "/inspect", codeFields());
  const box = $("inspect-error");
  if (status === 200) {
    box.hidden = true;
    setInterface(body);
  } else {
    box.hidden = false;
    box.replaceChildren(errorBox(body, status));
  }
}

// ---- Running ----------------------------------------------------------------

/** A param as the API takes it: numbers stay JSON numbers (their exact digits
 *  are sent), everything else ("NaN", "-0.0", hex floats, v128) as a string. */
function paramToken(raw) {
  const text = raw.trim();
  if (/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(text)) return { raw: text };
  if (/^(true|false|null)$/.test(text)) return { raw: text };
  if (text.startsWith("{") || text.startsWith("[")) {
    try { return { value: JSON.parse(text) }; } catch { /* send as a string */ }
  }
  return { value: text };
}

/** Builds the JSON body text by hand so that big integers keep every digit. */
function bodyWithParams(fields, params) {
  const base = JSON.stringify(fields);
  const list = params.map((p) => ("raw" in p ? p.raw : JSON.stringify(p.value))).join(",");
  return `${base.slice(0, -1)}${base.length > 2 ? "," : ""}"params":[${list}]}`;
}

async function ensureRequirement() {
  const req = state.requires;
  if (!req || state.target) return null;
  const found = await api("GET", `/modules/${encodeURIComponent(req.name)}`);
  if (found.status === 200) return null;
  const made = await api("POST", "/register", { module_name: req.name, wat: req.wat });
  if (made.status !== 201) return made;
  loadRegistry();
  return null;
}

// The call the panes describe, as a request body's fields and the path it
// goes to; null (with the reason shown) when there is nothing to call.
async function prepareCall() {
  const out = $("output");
  const fn = currentExport();
  if (!fn) {
    out.replaceChildren(el("div", { class: "error" }, "Pick a function (the module exports none, or it did not compile)."));
    return null;
  }
  out.replaceChildren(el("div", { class: "muted" }, "running…"));
  const failed = await ensureRequirement();
  if (failed) { out.replaceChildren(errorBox(failed.body, failed.status)); return null; }

  const fields = state.member ? { instance: state.member }
    : state.target ? { module_name: state.target } : codeFields();
  fields.function_name = fn.name;
  const hosts = $("hosts").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!state.target && !state.member && hosts.length) fields.host_modules = hosts;
  if ($("wasi").checked && !state.member) {
    const args = $("args").value.split(/\s+/).filter(Boolean);
    fields.wasi = { args, stdin: $("stdin").value };
  }
  const params = (fn.params || []).map((_, i) => paramToken($(`param-${i}`).value));
  const path = state.member ? `/environments/${state.env}/call` : state.target ? "/execute" : "/";
  return { body: bodyWithParams(fields, params), path };
}

async function post(path, body) {
  try {
    const response = await fetch(path, { method: "POST", headers: headers(), body });
    const parsed = await response.json().catch(() => ({ error: { code: "bad_response", message: "not JSON" } }));
    return { status: response.status, ok: response.ok, body: parsed };
  } catch (e) {
    return { status: 0, ok: false, body: { error: { code: "network", message: e.message } } };
  }
}

// One call's answer (results or error) in the output pane, after `head`.
function showAnswer(answer, ok, status, ms, ...head) {
  $("output").replaceChildren(...head, ...(ok ? renderResult(answer, ms) : [errorBox(answer, status)]));
}

async function run() {
  const times = Math.max(1, Math.min(1000, Number($("repeat").value) || 1));
  if (times > 1) return runBatch(times);
  const call = await prepareCall();
  if (!call) return;
  const started = performance.now();
  const r = await post(call.path, call.body);
  showAnswer(r.body, r.ok, r.status, (performance.now() - started).toFixed(1));
}

// The same call `times` times in one POST /batch: a summary of all, then
// the first answer.
async function runBatch(times) {
  if (state.member) {
    $("output").replaceChildren(el("div", { class: "error" }, "A batch runs registered modules or code from the editor, not an environment's instance."));
    return;
  }
  const call = await prepareCall();
  if (!call) return;
  const started = performance.now();
  const r = await post("/batch", `{"calls":[${Array(times).fill(call.body).join(",")}]}`);
  const ms = (performance.now() - started).toFixed(1);
  if (!r.ok) { $("output").replaceChildren(errorBox(r.body, r.status)); return; }
  const s = r.body.stats;
  const first = r.body.results[0];
  const summary = el("div", { id: "batch-summary", class: "ok-head" },
    `Batch of ${s.calls}: ${s.succeeded} answered, ${s.failed} failed · server ${s.wall_time_us} µs · round trip ${ms} ms · the first:`);
  showAnswer(first, !first.error, 0, ms, summary);
}

// The call as a background job: submitted, then followed until it ends.
async function runJob() {
  if (state.member) {
    $("output").replaceChildren(el("div", { class: "error" }, "A job runs registered modules or code from the editor, not an environment's instance."));
    return;
  }
  const call = await prepareCall();
  if (!call) return;
  const submitted = await post("/jobs", `{"call":${call.body}}`);
  if (submitted.status !== 202) { $("output").replaceChildren(errorBox(submitted.body, submitted.status)); return; }
  const id = submitted.body.id;
  const line = (status) => el("div", { id: "job-status", class: "muted" }, `job ${id}: ${status}`);
  const started = performance.now();
  for (;;) {
    const job = await api("GET", `/jobs/${encodeURIComponent(id)}`);
    if (job.status !== 200) { $("output").replaceChildren(errorBox(job.body, job.status)); return; }
    const status = job.body.status;
    if (status === "queued" || status === "running") {
      $("output").replaceChildren(line(status));
      await new Promise((done) => setTimeout(done, 100));
      continue;
    }
    const ms = (performance.now() - started).toFixed(1);
    const result = job.body.result;
    if (!result) { $("output").replaceChildren(line(`${status}: ${job.body.reason || "no result"}`)); return; }
    showAnswer(result, !result.error, 0, ms, line(status));
    return;
  }
}

function renderResult(body, ms) {
  const parts = [];
  const rows = body.results.map((v, i) =>
    el("tr", {}, el("td", { class: "type" }, body.result_types[i]), el("td", { class: "value" }, JSON.stringify(v))));
  parts.push(el("div", { class: "ok-head" }, body.results.length ? "Results" : "Done (no results)"));
  if (rows.length) parts.push(el("table", { id: "results", class: "results" }, ...rows));
  if ("exit_code" in body) parts.push(el("div", {}, `exit code ${body.exit_code}`));
  if (body.stdout) parts.push(el("div", { class: "stream" }, "stdout", el("pre", { id: "stdout" }, body.stdout)));
  if (body.stderr) parts.push(el("div", { class: "stream" }, "stderr", el("pre", { id: "stderr" }, body.stderr)));
  const s = body.stats || {};
  parts.push(el("div", { class: "stats" },
    `fuel ${s.fuel_consumed} · ${s.compile || "instance"}${s.compile_us ? ` ${s.compile_us} µs` : ""} · ` +
    `instantiate ${s.instantiate_us} µs · call ${s.call_us} µs · server ${s.wall_time_us} µs · round trip ${ms} ms`));
  return parts;
}

// ---- Registry -----------------------------------------------------------------

async function loadRegistry() {
  const { status, body } = await api("GET", "/modules");
  const list = $("modules");
  if (status !== 200) { list.replaceChildren(el("li", {}, errorBox(body, status))); return; }
  $("registry-count").textContent = `${body.modules.length} module(s)`;
  list.replaceChildren(...body.modules.map((m) =>
    el("li", {},
      el("button", { type: "button", class: "link", "data-module": m.name, onclick: () => selectModule(m.name) }, m.name),
      el("span", { class: "muted" }, ` ${m.size} B${m.host_modules.length ? ` · imports ${m.host_modules.join(", ")}` : ""}`))));
}

async function selectModule(name) {
  const { status, body } = await api("GET", `/modules/${encodeURIComponent(name)}`);
  if (status !== 200) { $("output").replaceChildren(errorBox(body, status)); return; }
  state.member = null;
  state.target = name;
  $("target").textContent = `registered module "${name}"`;
  $("use-editor").hidden = false;
  $("hosts-line").hidden = true;
  setInterface(body);
}

function useEditor() {
  state.target = null;
  state.member = null;
  $("target").textContent = "the code in the editor";
  $("use-editor").hidden = true;
  $("hosts-line").hidden = false;
  inspect();
}

async function register() {
  const name = $("register-name").value.trim();
  const box = $("register-result");
  if (!name) { box.replaceChildren(el("div", { class: "error" }, "Give the module a name.")); return; }
  const fields = { module_name: name, ...codeFields() };
  const hosts = $("hosts").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (hosts.length) fields.host_modules = hosts;
  const { status, body } = await api("POST", "/register", fields);
  if (status === 201) {
    box.replaceChildren(el("div", { class: "ok" }, `registered "${body.name}" (sha256 ${body.sha256.slice(0, 12)}…)`));
    loadRegistry();
  } else {
    box.replaceChildren(errorBox(body, status));
  }
}

// ---- Environment ---------------------------------------------------------------

async function newEnvironment() {
  const { status, body } = await api("POST", "/environments", {});
  if (status !== 201) { $("env-result").replaceChildren(errorBox(body, status)); return; }
  state.env = body.id;
  $("env-id").textContent = ` ${body.id}`;
  $("env-result").replaceChildren();
  renderMembers([]);
}

async function addToEnvironment() {
  const box = $("env-result");
  if (!state.env) await newEnvironment();
  if (!state.env) return;
  const fields = state.target ? { module_name: state.target } : codeFields();
  const name = $("env-name").value.trim();
  const as = $("env-as").value.trim();
  if (name) fields.name = name;
  if (as) fields.as = as;
  const { status, body } = await api("POST", `/environments/${state.env}/instances`, fields);
  if (status !== 201) { box.replaceChildren(errorBox(body, status)); return; }
  box.replaceChildren(el("div", { class: "ok" },
    `instance #${body.index}${body.name ? ` "${body.name}"` : ""}${body.exposed_as.length ? `, exposed as ${body.exposed_as.join(", ")}` : ""}`));
  const env = await api("GET", `/environments/${state.env}`);
  if (env.status === 200) renderMembers(env.body.instances || []);
}

function renderMembers(members) {
  $("env-members").replaceChildren(...members.map((m) =>
    el("li", {},
      m.name
        ? el("button", { type: "button", class: "link", "data-member": m.name, onclick: () => selectMember(m) }, m.name)
        : el("span", {}, `#${m.index}`),
      el("span", { class: "muted" }, ` ${m.module}${m.exposed_as.length ? ` · as ${m.exposed_as.join(", ")}` : ""}`))));
}

function selectMember(member) {
  state.target = null;
  state.member = member.name;
  $("target").textContent = `instance "${member.name}" of the environment`;
  $("use-editor").hidden = false;
  $("hosts-line").hidden = true;
  setInterface(member);
}

// ---- Sources ----------------------------------------------------------------

function loadExample(index) {
  const ex = EXAMPLES[index];
  useEditorSilently();
  state.source = { kind: "wat", text: ex.wat };
  state.pending = { fn: ex.fn, params: ex.params };
  state.requires = ex.requires || null;
  $("editor").disabled = false;
  $("editor").value = ex.wat;
  $("source-note").textContent = "";
  $("hosts").value = ex.hosts || "";
  $("wasi").checked = !!ex.wasi;
  $("wasi-box").open = !!ex.wasi;
  if (ex.member) { $("env-name").value = ex.member.name; $("env-as").value = ex.member.as; }
  inspect();
}

function useEditorSilently() {
  state.target = null;
  state.member = null;
  $("target").textContent = "the code in the editor";
  $("use-editor").hidden = true;
  $("hosts-line").hidden = false;
}

function upload(file) {
  const reader = new FileReader();
  reader.onload = () => {
    const bytes = new Uint8Array(reader.result);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    useEditorSilently();
    state.source = { kind: "wasm", base64: btoa(binary), name: file.name, size: bytes.length };
    state.requires = null;
    $("editor").value = `;; ${file.name}: ${bytes.length} bytes of WebAssembly binary.\n;; Pick an example to edit text again.`;
    $("editor").disabled = true;
    $("source-note").textContent = `${file.name} (${bytes.length} B)`;
    inspect();
  };
  reader.readAsArrayBuffer(file);
}

// ---- Wiring -----------------------------------------------------------------

function init() {
  $("token").value = localStorage.getItem("wasm-exec-api-token") || "";
  $("token").addEventListener("change", () => { localStorage.setItem("wasm-exec-api-token", $("token").value); loadRegistry(); });
  $("example").replaceChildren(...EXAMPLES.map((ex, i) => el("option", { value: i }, ex.name)));
  $("example").addEventListener("change", (e) => loadExample(Number(e.target.value)));
  $("editor").addEventListener("input", () => { state.source = { kind: "wat", text: $("editor").value }; scheduleInspect(); });
  $("editor").addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      const t = e.target; const at = t.selectionStart;
      t.setRangeText("  ", at, t.selectionEnd, "end");
      t.dispatchEvent(new Event("input"));
    }
  });
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; });
  $("function").addEventListener("change", renderParams);
  $("run").addEventListener("click", run);
  $("run-job").addEventListener("click", runJob);
  $("register").addEventListener("click", register);
  $("refresh").addEventListener("click", loadRegistry);
  $("use-editor").addEventListener("click", useEditor);
  $("env-new").addEventListener("click", newEnvironment);
  $("env-add").addEventListener("click", addToEnvironment);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  loadExample(0);
  loadRegistry();
}

init();
