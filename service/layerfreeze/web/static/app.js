// The page: load or pick a model, show its tree, preview the spec on every edit, run the job.
import { ApiError, api, auth, saveFile, uploadModel } from "./api.js";
import { SpecEditor, formatSpec } from "./spec.js";
import { Tree, number, percent } from "./tree.js";

const $ = (id) => document.getElementById(id);
const PREVIEW_DELAY_MS = 120;
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

function startUpload(file) {
  if (upload) upload.abort();
  const bar = $("upload-progress");
  bar.value = 0;
  $("upload").hidden = false;
  $("upload-label").textContent = `Uploading ${file.name}`;
  say(`Uploading ${file.name} (${number(file.size)} bytes)…`);
  const mine = uploadModel(file, (loaded, total, note) => {
    if (upload !== mine) return;
    bar.value = total ? Math.round((100 * loaded) / total) : 100;
    if (note) say(`${file.name}: ${note}…`);
    if (loaded >= total) $("upload-label").textContent = `Reading ${file.name} on the service`;
  });
  upload = mine;
  mine.promise
    .then(async (model) => {
      if (upload !== mine) return;
      say(`Stored ${file.name} (${model.format}).`);
      await refreshModels(model.id);
      await loadModel(model);
    })
    .catch((err) => {
      if (upload !== mine && err.problem?.cancelled) return;  // replaced by a newer upload
      if (err.problem?.cancelled) say(`Upload of ${file.name} cancelled.`);
      else failed(err, `Upload of ${file.name} failed`);
    })
    .finally(() => {
      if (upload !== mine) return;
      upload = null;
      $("upload").hidden = true;
    });
}

$("upload-cancel").addEventListener("click", () => upload && upload.abort());
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) startUpload(file);
  e.target.value = "";
});

function dropped(e) {
  e.preventDefault();
  $("drop").classList.remove("over");
  const items = [...(e.dataTransfer.items || [])].filter((i) => i.kind === "file");
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (entries.some((entry) => entry && entry.isDirectory) || e.dataTransfer.files.length > 1) {
    say("This service takes one checkpoint file at a time; model directories (multi-file models) are not " +
      "accepted yet.", { error: true });
    return;
  }
  const file = e.dataTransfer.files[0];
  if (file) startUpload(file);
}

document.addEventListener("dragover", (e) => {
  e.preventDefault();
  $("drop").classList.add("over");
});
document.addEventListener("dragleave", (e) => {
  if (!e.relatedTarget) $("drop").classList.remove("over");
});
document.addEventListener("drop", dropped);

function modelLabel(m) {
  const name = m.files && m.files.length ? m.files[0].path : m.id;
  return `${name} · ${m.format} · ${number(m.bytes)} bytes · ${m.created_at.slice(0, 16).replace("T", " ")}`;
}

async function refreshModels(select) {
  try {
    const page = await api("GET", "/v1/models?limit=200");
    const options = page.items.map((m) => {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = modelLabel(m);
      o.model = m;
      return o;
    });
    const none = document.createElement("option");
    none.value = "";
    none.textContent = options.length ? "(pick a stored model)" : "(none yet)";
    $("models").replaceChildren(none, ...options);
    $("models").value = select || state.model?.id || "";
  } catch (err) {
    failed(err, "Listing the stored models failed");
  }
}

$("models-refresh").addEventListener("click", () => refreshModels());
$("models").addEventListener("change", (e) => {
  const option = e.target.selectedOptions[0];
  if (option && option.model) loadModel(option.model);
});

async function loadModel(model) {
  state.model = model;
  state.job = null;
  $("downloads").hidden = true;
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

function showReport(report) {
  state.report = report;
  const s = report.summary;
  const flagged = new Map();
  for (const w of report.warnings || []) {
    if (w.code === "batchnorm_in_frozen_region") {
      for (const name of w.names) flagged.set(name, "normalization layer in a frozen region: its running statistics still change in train() mode");
    }
  }
  tree.setReport(report, flagged);
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
  editor.showWarnings(report.warnings);
  $("run").disabled = !state.model || !editor.jsonValid;
}

// -- the spec and its preview ----------------------------------------------------------------------------

let previewTimer = null;
let previewSeq = 0;
let previewAbort = null;

const editor = new SpecEditor({
  rules: $("rules"), json: $("spec-json"), jsonError: $("json-error"), strict: $("strict"),
  errors: $("spec-errors"), warnings: $("warnings"),
  onChange: ({ valid }) => {
    $("run").disabled = !state.model || !valid;
    updateCommands();
    if (valid) schedulePreview(PREVIEW_DELAY_MS);
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
  previewTimer = setTimeout(preview, delay);
}

/** One preview per pause in typing; an answer to an older request than the newest is dropped. */
async function preview() {
  const seq = ++previewSeq;
  previewAbort?.abort();
  previewAbort = new AbortController();
  const model = state.model;
  try {
    const report = await api("POST", `/v1/models/${model.id}/preview`, { json: editor.spec, signal: previewAbort.signal });
    if (seq !== previewSeq || model !== state.model) return;
    const start = performance.now();
    editor.showProblems([]);
    showReport(report);
    document.body.dataset.renderMs = String(Math.round(performance.now() - start));  // for bench/
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
  downloadLink($("download-artifact"), job.links.artifact, name);
  downloadLink($("download-report"), job.links.report, `${baseName(job)}.report.json`);
  $("downloads").hidden = !job.links.artifact;
}

// -- jobs ------------------------------------------------------------------------------------------------

let jobsTimer = null;

async function refreshJobs() {
  clearTimeout(jobsTimer);
  let page;
  try {
    page = await api("GET", "/v1/jobs?limit=20");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) showAuth();
    return;
  }
  const rows = page.items.map((job) => {
    const tr = document.createElement("tr");
    const cell = (content, cls) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.append(content);
      tr.append(td);
      return td;
    };
    const code = document.createElement("code");
    code.textContent = job.id.slice(0, 10);
    code.title = job.id;
    cell(code);
    cell(job.status, `status-${job.status}`).title = job.error?.detail || "";
    cell(job.created_at.slice(0, 19).replace("T", " "));
    const files = cell("");
    if (job.status === "succeeded") {
      const report = document.createElement("a");
      report.textContent = "report";
      downloadLink(report, job.links.report, `${baseName(job)}.report.json`);
      report.setAttribute("aria-label", `report of job ${job.id.slice(0, 10)}`);
      files.append(report);
      if (job.links.artifact) {
        const artifact = document.createElement("a");
        artifact.textContent = "checkpoint";
        downloadLink(artifact, job.links.artifact, job.output?.filename || "checkpoint");
        artifact.setAttribute("aria-label", `checkpoint of job ${job.id.slice(0, 10)}`);
        files.append(artifact);
      }
    }
    return tr;
  });
  $("jobs").replaceChildren(...rows);
  if (page.items.some((j) => j.status === "queued" || j.status === "running")) {
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
