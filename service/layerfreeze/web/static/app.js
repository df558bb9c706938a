// The page: load or pick a model, show its tree, preview the spec on every edit, run the job.
import { ApiError, api, auth, saveFile, uploadDirectory, uploadModel } from "./api.js";
import { fromDrop, fromPicked } from "./files.js";
import { el } from "./dom.js";
import { PagedList, deleteButton } from "./lists.js";
import { SpecEditor, formatSpec } from "./spec.js";
import { Tree, number, percent } from "./tree.js";

const $ = (id) => document.getElementById(id);
const TYPING_PAUSE_MS = 120;  // a preview per pause in typing; clicks and buttons preview at once
const POLL_MS = 500;
const POLL_LIMIT_MS = 15 * 60 * 1000;

const state = { model: null, report: null, job: null, tokenNeeded: false };

// -- status line and auth --------------------------------------------------------------------------------

function say(text, { error = false } = {}) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

function failed(err, what) {
  if (err instanceof ApiError && err.status === 401) {
    showAuth();
    say(`${what}: this service needs a token (enter it above).`, { error: true });
    return;
  }
  say(`${what}: ${err.message}`, { error: true });
}

function showAuth() {
  state.tokenNeeded = true;
  $("auth").hidden = false;
  updateCommands();
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  auth.set($("token").value.trim());
  $("token").value = "";
  say(auth.token ? "Token set for this tab." : "Token cleared.");
  refreshModels();
  refreshJobs();
});
$("token-forget").addEventListener("click", () => {
  auth.set("");
  say("Token forgotten.");
});

// -- loading a model -------------------------------------------------------------------------------------

let upload = null;

/** Send a model with the progress bar: one file or a model directory's files as one model, resumable
 * where the service offers it. `files`: [{path, file}]; `name`: what the messages call it. */
function startUpload(files, name, aside = "") {
  if (upload) upload.abort();
  const bar = $("upload-progress");
  bar.value = 0;
  $("upload").hidden = false;
  $("upload-label").textContent = `Uploading ${name}`;
  const size = files.reduce((n, f) => n + f.file.size, 0);
  const count = files.length > 1 ? `${number(files.length)} files, ` : "";
  say(`Uploading ${name} (${count}${number(size)} bytes${aside})…`);
  const onProgress = (loaded, total, note) => {
    if (upload !== mine) return;
    bar.value = total ? Math.round((100 * loaded) / total) : 100;
    if (note) say(`${name}: ${note}…`);
    if (loaded >= total) $("upload-label").textContent = `Reading ${name} on the service`;
  };
  const mine = files.length === 1 ? uploadModel(files[0].file, onProgress) : uploadDirectory(files, onProgress);
  upload = mine;
  mine.promise
    .then(async (model) => {
      if (upload !== mine) return;
      say(`Stored ${name} (${model.format}${files.length > 1 ? `, ${files.length} files` : ""}).`);
      await refreshModels();
      await loadModel(model);
    })
    .catch((err) => {
      if (upload !== mine && err.problem?.cancelled) return;  // replaced by a newer upload
      if (err.problem?.cancelled) say(`Upload of ${name} cancelled.`);
      else failed(err, `Upload of ${name} failed`);
    })
    .finally(() => {
      if (upload !== mine) return;
      upload = null;
      $("upload").hidden = true;
    });
}

function startModel({ files, skipped, folder }) {
  const left = skipped ? `${skipped} hidden file${skipped > 1 ? "s" : ""} left out` : "";
  if (!files.length) {
    say(`Nothing to upload: no files${left ? ` (${left})` : ""}.`, { error: true });
    return;
  }
  const name = folder || (files.length === 1 ? files[0].path : `${files.length} files`);
  startUpload(files, name, left ? `; ${left}` : "");
}

$("upload-cancel").addEventListener("click", () => upload && upload.abort());
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) startUpload([{ path: file.name, file }], file.name);
  e.target.value = "";
});
$("folder").addEventListener("change", (e) => {
  if (e.target.files.length) startModel(fromPicked(e.target.files));
  e.target.value = "";
});

function dropped(e) {
  e.preventDefault();
  $("drop").classList.remove("over");
  fromDrop(e.dataTransfer).then(startModel).catch((err) => failed(err, "Reading the dropped files failed"));
}

document.addEventListener("dragover", (e) => {
  e.preventDefault();
  $("drop").classList.add("over");
});
document.addEventListener("dragleave", (e) => {
  if (!e.relatedTarget) $("drop").classList.remove("over");
});
document.addEventListener("drop", dropped);

/** A model's name: its file, or for a directory its index (else its first file) and how many more. */
function modelName(m) {
  const files = m.files || [];
  if (files.length <= 1) return files.length ? files[0].path : m.id;
  const index = files.find((f) => /\.index\.json$/.test(f.path));
  return `${(index || files[0]).path} + ${files.length - 1} files`;
}

function modelLabel(m) {
  return `${modelName(m)} · ${m.format} · ${number(m.bytes)} bytes · ${m.created_at.slice(0, 16).replace("T", " ")}`;
}

function modelRow(m) {
  const name = modelName(m);
  const open = el("button", { type: "button", class: "link", "aria-label": `Open model ${name}`,
    title: (m.files || []).map((f) => f.path).join("\n") }, name);
  open.addEventListener("click", () => loadModel(m));
  const row = el("li", { class: "model-item", "data-id": m.id },
    open, el("span", { class: "hint" }, ` ${m.format} · ${number(m.bytes)} bytes · ${m.created_at.slice(0, 16).replace("T", " ")} `));
  if (state.model?.id === m.id) row.setAttribute("aria-current", "true");
  deleteButton({ name, what: "model", slot: row, run: async () => {
    await api("DELETE", `/v1/models/${m.id}`);
    const next = row.nextElementSibling || row.previousElementSibling;
    models.remove(row);
    $("models-empty").hidden = models.items.length > 0;
    if (state.model?.id === m.id) unloadModel();
    say(`Deleted model ${name}; its jobs keep their files.`);
    (next?.querySelector("button") || $("models-refresh")).focus();
  } });
  return row;
}

const models = new PagedList({
  body: $("models"), more: $("models-more"), first: "/v1/models?limit=50", row: modelRow,
  onError: (err) => failed(err, "Listing the stored models failed"),
});
async function refreshModels() {
  await models.refresh();
  $("models-empty").hidden = models.items.length > 0;
}

$("models-refresh").addEventListener("click", () => refreshModels());

function markCurrent() {
  for (const li of $("models").children) {
    if (li.dataset.id === state.model?.id) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
  }
}

function unloadModel() {
  state.model = null;
  state.report = null;
  tree.clear();
  $("tree-empty").hidden = false;
  $("summary").hidden = true;
  $("model-info").textContent = "";
  $("run").disabled = true;
  document.body.dataset.preview = "idle";
  updateCommands();
}

async function loadModel(model) {
  state.model = model;
  state.job = null;
  markCurrent();
  $("downloads").hidden = true;
  $("job-files").hidden = true;
  $("run-state").textContent = "";
  $("model-info").textContent = `${modelLabel(model)} · sha256 ${model.sha256.slice(0, 16)}…`;
  try {
    showReport(await api("GET", `/v1/models/${model.id}/report`));
  } catch (err) {
    failed(err, "Reading the model's report failed");
    return;
  }
  updateCommands();
  schedulePreview(0);
}

// -- tree and counts -------------------------------------------------------------------------------------

const tree = new Tree($("tree"), { onPick: (n) => editor.addRuleFor(n) });

function bytes(n) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function flaggedBy(warnings) {
  const flagged = new Map();
  for (const w of warnings || []) {
    if (w.code === "batchnorm_in_frozen_region") {
      for (const name of w.names) flagged.set(name, "normalization layer in a frozen region: its running statistics still change in train() mode");
    }
  }
  return flagged;
}

/** A full report (the model's own, or a full preview): the tree built or refreshed, then the counts. */
function showReport(report) {
  state.report = report;
  tree.setReport(report, flaggedBy(report.warnings));
  showCounts(report.summary, report.warnings);
}

function showCounts(s, warnings) {
  $("tree-empty").hidden = true;
  $("summary").hidden = false;
  const frozenShare = s.numel_total ? s.numel_frozen / s.numel_total : 0;
  $("share-trainable").style.width = `${100 * (1 - frozenShare)}%`;
  $("share-frozen").style.width = `${100 * frozenShare}%`;
  $("count-trainable").textContent = `${number(s.numel_trainable)} (${number(s.trainable)} tensors)`;
  $("count-frozen").textContent = `${number(s.numel_frozen)} (${number(s.frozen)} tensors)`;
  $("count-fraction").textContent = `${percent(s.trainable_fraction)} of ${number(s.numel_total)} elements trainable`;
  $("memory-saved").textContent = `training memory saved: ${bytes(s.training_memory_saved_bytes)}`;
  $("memory-saved").title = s.training_memory_assumption || "";
  editor.showWarnings(warnings);
  $("run").disabled = !state.model || !editor.jsonValid;
}

// -- the spec and its preview ----------------------------------------------------------------------------

let previewTimer = null;
let previewSeq = 0;
let previewAbort = null;
let editAt = 0;  // when the edit the newest preview answers was made

const editor = new SpecEditor({
  rules: $("rules"), json: $("spec-json"), jsonError: $("json-error"), strict: $("strict"),
  errors: $("spec-errors"), warnings: $("warnings"),
  onChange: ({ valid, typing }) => {
    $("run").disabled = !state.model || !valid;
    updateCommands();
    if (valid) schedulePreview(typing ? TYPING_PAUSE_MS : 0);
  },
});

$("rule-add").addEventListener("click", () => {
  editor.addRule({ action: "freeze", names: [""] });
  const last = editor.rules.length - 1;
  document.getElementById(`r${last}-v0`)?.focus();
});

function schedulePreview(delay) {
  clearTimeout(previewTimer);
  if (!state.model) return;
  if (editor.hasBlankValue()) {  // a rule being written: wait for its value rather than flash an error
    previewSeq += 1;
    document.body.dataset.preview = "idle";
    return;
  }
  document.body.dataset.preview = "pending";  // tests and tools wait on this
  editAt = performance.now();
  previewTimer = setTimeout(preview, delay);
}

/** One preview per pause in typing; an answer to an older request than the newest is dropped. */
async function preview() {
  const seq = ++previewSeq;
  previewAbort?.abort();
  previewAbort = new AbortController();
  const model = state.model;
  const ask = (view) => api("POST", `/v1/models/${model.id}/preview${view}`, { json: editor.spec,
    signal: previewAbort.signal });
  try {
    // The columnar view: only what the spec decides, laid over the model's report the tree was built from.
    const view = await ask("?view=columns");
    if (seq !== previewSeq || model !== state.model) return;
    const start = performance.now();
    editor.showProblems([]);
    if (tree.applyColumns(view, flaggedBy(view.warnings))) {
      showCounts(view.summary, view.warnings);
    } else {  // columns that do not fit the tree shown: the full report, which rebuilds it
      const report = await ask("");
      if (seq !== previewSeq || model !== state.model) return;
      showReport(report);
    }
    const end = performance.now();  // for bench/: the page's own work, and the edit's whole round trip
    document.body.dataset.renderMs = String(Math.round(end - start));
    document.body.dataset.editMs = String(Math.round(end - editAt));
    document.body.dataset.preview = "ok";
  } catch (err) {
    if (seq !== previewSeq || err.name === "AbortError") return;
    document.body.dataset.preview = "error";
    if (err instanceof ApiError && err.status === 422) {
      editor.showProblems(err.problem.errors || [], err.problem.errors?.length ? "" : err.message);
      $("run").disabled = true;
    } else {
      failed(err, "Preview failed");
    }
  }
}

// -- running the job -------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

$("run").addEventListener("click", async () => {
  if (!state.model) return;
  const run = $("run");
  run.disabled = true;
  $("downloads").hidden = true;
  $("run-state").textContent = "submitting…";
  try {
    let job = await api("POST", "/v1/jobs?wait=20", { json: { model: state.model.id, spec: editor.spec } });
    const deadline = Date.now() + POLL_LIMIT_MS;
    refreshJobs();
    while (job.status === "queued" || job.status === "running") {
      $("run-state").textContent = job.status;
      if (Date.now() > deadline) throw new Error(`job ${job.id} is still ${job.status}; see the job list`);
      await sleep(POLL_MS);
      job = await api("GET", job.links.self);
    }
    state.job = job;
    updateCommands();
    if (job.status === "failed") {
      $("run-state").textContent = `failed: ${job.error?.detail || "unknown reason"}`;
    } else {
      $("run-state").textContent = `done: job ${job.id}`;
      setDownloads(job);
      say(`Job ${job.id} succeeded: the checkpoint is ready.`);
      $("download-artifact").focus();
    }
  } catch (err) {
    $("run-state").textContent = "";
    failed(err, "The job failed");
  } finally {
    run.disabled = !state.model || !editor.jsonValid;
    refreshJobs();
  }
});

function baseName(job) {
  const name = job.output?.filename || job.input?.filename || job.id;
  return name.replace(/\.[^.]*$/, "");
}

/** A link that downloads: plain when no token is needed (the browser streams the file), through a
 * fetch with the Authorization header otherwise. */
function downloadLink(a, path, filename) {
  a.href = path;
  a.setAttribute("download", filename);
  a.onclick = (e) => {
    if (!auth.token) return;
    e.preventDefault();
    saveFile(path, filename).catch((err) => failed(err, "Download failed"));
  };
}

function setDownloads(job) {
  const name = job.output?.filename || job.input?.filename || "checkpoint";
  const directory = (state.model?.files || []).length > 1;
  const artifact = $("download-artifact");
  artifact.textContent = directory ? "Download the directory (tar)" : "Download the checkpoint";
  downloadLink(artifact, job.links.artifact, directory ? `${name}.tar` : name);
  downloadLink($("download-report"), job.links.report, `${baseName(job)}.report.json`);
  $("downloads").hidden = !job.links.artifact;
  $("job-files").hidden = true;
  if (directory) showJobFiles(job);
}

const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

/** A model directory's job: each output file on its own (GET /v1/jobs/{id}/files/{path}), from its report. */
async function showJobFiles(job) {
  let report;
  try {
    report = await api("GET", job.links.report);
  } catch (err) {
    failed(err, "Reading the job's report failed");
    return;
  }
  if (state.job?.id !== job.id || !report.files) return;
  const items = report.files.files.map((f) => {
    const a = el("a", { class: "mono" }, f.path);
    downloadLink(a, `${job.links.self}/files/${encodePath(f.path)}`, f.path.split("/").pop());
    a.setAttribute("aria-label", `Download ${f.path}`);
    return el("li", {}, a, el("span", { class: "hint" },
      ` ${number(f.bytes)} bytes · ${f.role} · ${f.changed ? "changed" : "unchanged"}`));
  });
  $("job-files-list").replaceChildren(...items);
  $("job-files").hidden = false;
}

// -- jobs ------------------------------------------------------------------------------------------------

let jobsTimer = null;

function jobRow(job) {
  const short = job.id.slice(0, 10);
  const code = el("code", { title: job.id }, short);
  const status = el("td", { class: `status-${job.status}`, title: job.error?.detail || "" }, job.status);
  const files = el("td");
  if (job.status === "succeeded") {
    const report = el("a", {}, "report");
    downloadLink(report, job.links.report, `${baseName(job)}.report.json`);
    report.setAttribute("aria-label", `report of job ${short}`);
    files.append(report);
    if (job.links.artifact) {
      const artifact = el("a", {}, "checkpoint");
      downloadLink(artifact, job.links.artifact, job.output?.filename || "checkpoint");
      artifact.setAttribute("aria-label", `checkpoint of job ${short}`);
      files.append(artifact);
    }
  }
  const actions = el("td");
  const tr = el("tr", { "data-id": job.id }, el("td", {}, code), status,
    el("td", {}, job.created_at.slice(0, 19).replace("T", " ")), files, actions);
  deleteButton({ name: short, what: "job", slot: actions, run: async () => {
    await api("DELETE", job.links.self);
    const next = tr.nextElementSibling || tr.previousElementSibling;
    jobs.remove(tr);
    if (state.job?.id === job.id) {
      state.job = null;
      $("downloads").hidden = true;
      $("job-files").hidden = true;
      $("run-state").textContent = "";
      updateCommands();
    }
    say(`Deleted job ${short} and its files.`);
    (next?.querySelector("button") || $("jobs-refresh")).focus();
  } });
  return tr;
}

const jobs = new PagedList({
  body: $("jobs"), more: $("jobs-more"), first: "/v1/jobs?limit=20", row: jobRow,
  onError: (err) => {
    if (err instanceof ApiError && err.status === 401) showAuth();
  },
});

/** The first page of jobs; again every 2 s while one of them runs (not while a deletion is asked). */
async function refreshJobs() {
  clearTimeout(jobsTimer);
  if (jobs.confirming) {
    jobsTimer = setTimeout(refreshJobs, 2000);
    return;
  }
  const page = await jobs.refresh();
  if (page && page.items.some((j) => j.status === "queued" || j.status === "running")) {
    jobsTimer = setTimeout(refreshJobs, 2000);
  }
}

$("jobs-refresh").addEventListener("click", refreshJobs);

// -- the same with curl and the Python client ------------------------------------------------------------

const PY_WORDS = { true: "True", false: "False", null: "None" };
const shellQuote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

function updateCommands() {
  const base = window.location.origin;
  const model = state.model?.id || "MODEL_ID";
  const job = state.job?.id || "JOB_ID";
  const authLine = state.tokenNeeded ? ` \\\n  -H "Authorization: Bearer $LAYERFREEZE_TOKEN"` : "";
  const specText = formatSpec(editor.jsonValid ? editor.spec : {});
  $("cmd-curl").value = [
    `curl -fsS -X POST ${shellQuote(`${base}/v1/jobs?wait=30`)}${authLine} \\`,
    `  -H 'Content-Type: application/json' --data-binary @- <<'JSON'`,
    `{"model": ${JSON.stringify(model)},`,
    ` "spec": ${specText.replace(/\n/g, "\n ")}}`,
    "JSON",
    state.job ? `# the files of job ${job}, the one this page ran:` : "# then, with the id of the job it answers:",
    `curl -fsS -OJ ${shellQuote(`${base}/v1/jobs/${job}/artifact`)}${authLine}`,
    `curl -fsS -o report.json ${shellQuote(`${base}/v1/jobs/${job}/report`)}${authLine}`,
  ].join("\n");
  const spec = formatSpec(editor.jsonValid ? editor.spec : {})
    .replace(/"(?:\\.|[^"\\])*"|\btrue\b|\bfalse\b|\bnull\b/g, (t) => PY_WORDS[t] || t);
  $("cmd-python").value = [
    "# pip install clients/python; the token, if any, comes from $LAYERFREEZE_TOKEN",
    "from layerfreeze_client import Client",
    "",
    `spec = ${spec}`,
    `with Client(${JSON.stringify(base)}) as client:`,
    `    job = client.wait(client.submit_stored(${JSON.stringify(model)}, spec))`,
    "    path = client.download(job, \".\")  # verified against its sha256",
    "    report = client.report(job)",
  ].join("\n");
}

// -- start -----------------------------------------------------------------------------------------------

updateCommands();
refreshModels();
refreshJobs();
