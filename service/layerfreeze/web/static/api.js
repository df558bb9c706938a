// Talking to the service: JSON calls, the model upload with progress, and downloads.
// The bearer token lives in sessionStorage only (this tab, until it closes), never in localStorage.

const TOKEN_KEY = "layerfreeze.token";

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  set(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (auth.token) headers.Authorization = `Bearer ${auth.token}`;
  return headers;
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  const text = await response.text();
  return response.ok ? text : { detail: text || response.statusText };
}

/** One JSON call: resolves with the parsed body, rejects with an ApiError carrying the problem. */
export async function api(method, path, { json, signal } = {}) {
  const init = { method, signal, cache: "no-store", headers: authHeaders() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof json === "string" ? json : JSON.stringify(json);
  }
  const response = await fetch(path, init);
  const body = await parse(response);
  if (!response.ok) throw new ApiError(response.status, typeof body === "object" && body ? body : {});
  return body;
}

const TUS = { "Tus-Resumable": "1.0.0" };
const CHUNK_BYTES = 8 * 1024 * 1024;
const RETRIES = 6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One XMLHttpRequest (fetch reports no upload progress): resolves with the XHR once it answered 2xx. */
function send(method, url, { headers = {}, body = null, onProgress, track } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    track(xhr);
    xhr.open(method, url);
    for (const [k, v] of Object.entries(authHeaders(headers))) xhr.setRequestHeader(k, v);
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr);
      let problem = {};
      try {
        problem = JSON.parse(xhr.responseText || "{}");
      } catch {
        problem = { detail: xhr.responseText || xhr.statusText };
      }
      reject(new ApiError(xhr.status, problem));
    };
    xhr.onerror = () => reject(new ApiError(0, { detail: "the connection broke off" }));
    xhr.onabort = () => reject(new ApiError(0, { detail: "upload cancelled", cancelled: true }));
    xhr.send(body);
  });
}

const base64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

async function tusOffered() {
  try {
    const r = await fetch("/v1/uploads", { method: "OPTIONS", headers: authHeaders(TUS), cache: "no-store" });
    return r.ok && (r.headers.get("tus-version") || "").split(",").includes("1.0.0");
  } catch {
    return false;
  }
}

/** Where a started upload stands: its offset, or null when the service no longer has it. */
async function offsetOf(location) {
  const r = await fetch(location, { method: "HEAD", headers: authHeaders(TUS), cache: "no-store" });
  if (r.status === 404 || r.status === 410) return null;
  if (!r.ok) throw new ApiError(r.status, { detail: `asking where the upload stands: HTTP ${r.status}` });
  return Number(r.headers.get("upload-offset"));
}

/** Store a model, with progress. Resumable (tus 1.0, in 8 MiB PATCHes) where the service offers it: a
 * dropped connection resumes from the offset the service kept, and so does the same file given again in
 * this tab (after a reload, say). Else one multipart POST /v1/models. `onProgress(loaded, total, note)`.
 * Returns {promise, abort}; abort cancels and abandons the upload. */
export function uploadModel(file, onProgress) {
  let current = null;
  let cancelled = false;
  let location = null;
  const track = (xhr) => {
    current = xhr;
  };
  const key = `layerfreeze.upload:${file.name}:${file.size}:${file.lastModified}`;

  async function resumable() {
    location = sessionStorage.getItem(key);
    let offset = location ? await offsetOf(location).catch(() => null) : null;
    if (offset === null) {
      const created = await send("POST", "/v1/uploads", { track, headers: { ...TUS,
        "Upload-Length": String(file.size), "Upload-Metadata": `filename ${base64(file.name)}` } });
      location = created.getResponseHeader("Location");
      sessionStorage.setItem(key, location);
      offset = 0;
    } else if (offset > 0) {
      onProgress(offset, file.size, `resuming at ${offset.toLocaleString("en")} bytes`);
    }
    let failures = 0;
    while (offset < file.size) {
      const start = offset;
      try {
        const done = await send("PATCH", location, { track, body: file.slice(start, start + CHUNK_BYTES),
          headers: { ...TUS, "Upload-Offset": String(start), "Content-Type": "application/offset+octet-stream" },
          onProgress: (loaded) => onProgress(start + loaded, file.size) });
        offset = Number(done.getResponseHeader("Upload-Offset"));
        failures = 0;
      } catch (err) {
        const passing = err.status === 0 || err.status === 409 || err.status === 429 || err.status >= 500;
        if (cancelled || !passing || ++failures > RETRIES) throw err;
        await sleep(250 * 2 ** failures);
        offset = await offsetOf(location).catch(() => start);
        if (offset === null) throw new ApiError(404, { detail: "the service no longer has this upload" });
        onProgress(offset, file.size, `connection lost; resuming at ${offset.toLocaleString("en")} bytes`);
      }
    }
    const model = await api("POST", "/v1/models", { json: { upload: location } });
    sessionStorage.removeItem(key);
    return model;
  }

  async function multipart() {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = await send("POST", "/v1/models", { track, body: form,
      onProgress: (loaded) => onProgress(loaded, file.size) });
    return JSON.parse(xhr.responseText);
  }

  const promise = (async () => ((await tusOffered()) ? resumable() : multipart()))();
  const abort = () => {
    cancelled = true;
    current?.abort();
    if (location) {
      sessionStorage.removeItem(key);
      fetch(location, { method: "DELETE", headers: authHeaders(TUS) }).catch(() => {});
    }
  };
  return { promise, abort };
}

/** How a model directory's files travel: one multipart POST /v1/models whose `file` parts are named by
 * their relative paths (the service makes them one model). The only function that knows it: a resumable
 * transport (one tus upload per file, then one request that makes the model of them) takes its place
 * with the same arguments and result. `onProgress(loaded)` counts bytes over all the files. */
async function sendDirectory(files, { track, onProgress }) {
  const form = new FormData();
  for (const { path, file } of files) form.append("file", file, path);
  const xhr = await send("POST", "/v1/models", { track, body: form, onProgress });
  return JSON.parse(xhr.responseText);
}

/** Store a model directory as one model, with progress. `files`: [{path, file}], `path` relative to the
 * model's root ("config.json", "model-00001-of-00002.safetensors"). Returns {promise, abort}. */
export function uploadDirectory(files, onProgress) {
  let current = null;
  const total = files.reduce((n, f) => n + f.file.size, 0);
  const promise = sendDirectory(files, {
    track: (xhr) => {
      current = xhr;
    },
    onProgress: (loaded) => onProgress(Math.min(loaded, total), total),
  });
  return { promise, abort: () => current?.abort() };
}

function filenameFrom(disposition, fallback) {
  const star = /filename\*=UTF-8''([^;]+)/i.exec(disposition || "");
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(disposition || "");
  return plain ? plain[1] : fallback;
}

/** Save a file the service serves. Without a token a plain link streams it; with one the bytes must be
 * fetched with the Authorization header and handed over as a blob. */
export async function saveFile(path, fallbackName) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, await parse(response));
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filenameFrom(response.headers.get("content-disposition"), fallbackName);
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
