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
export async function api(method, path, { json, signal, headers = {} } = {}) {
  const init = { method, signal, cache: "no-store", headers: authHeaders(headers) };
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
const TAKE_PATIENCE_MS = 10 * 60 * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cancelledError = () => new ApiError(0, { detail: "upload cancelled", cancelled: true });

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
    xhr.onabort = () => reject(cancelledError());
    xhr.send(body);
  });
}

const base64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));
/** A passing failure, worth another try: no answer (a dropped connection), busy, or the service's own. */
const passing = (err) => err.status === 0 || err.status === 409 || err.status === 429 || err.status >= 500;

/** The service's resumable-upload limits ({maxBytes, maxFiles}, either null when not stated), or null
 * when it takes no resumable uploads (then a model goes as one multipart request). */
async function tusLimits() {
  try {
    const r = await fetch("/v1/uploads", { method: "OPTIONS", headers: authHeaders(TUS), cache: "no-store" });
    if (!r.ok || !(r.headers.get("tus-version") || "").split(",").includes("1.0.0")) return null;
    const limit = (name) => (/^\d+$/.test(r.headers.get(name) || "") ? Number(r.headers.get(name)) : null);
    return { maxBytes: limit("tus-max-size"), maxFiles: limit("layerfreeze-max-model-files") };
  } catch {
    return null;
  }
}

/** Where a started upload stands: {offset, length}, or null when the service no longer has it. */
async function standing(location) {
  const r = await fetch(location, { method: "HEAD", headers: authHeaders(TUS), cache: "no-store" });
  if (r.status === 404 || r.status === 410) return null;
  if (!r.ok) throw new ApiError(r.status, { detail: `asking where the upload stands: HTTP ${r.status}` });
  return { offset: Number(r.headers.get("upload-offset")), length: Number(r.headers.get("upload-length")) };
}

/** One resumable upload's life, with the parts a Cancel needs: the request under way and every upload
 * started, so that all of them can be stopped and terminated. */
class Transfer {
  constructor() {
    this.current = null;
    this.cancelled = false;
    this.started = new Map();  // upload URL -> its sessionStorage key
    this.taking = new AbortController();
    this.track = (xhr) => {
      this.current = xhr;
    };
  }

  check() {
    if (this.cancelled) throw cancelledError();
  }

  /** Wait before another try; a Cancel meanwhile ends the wait at once. */
  async pause(ms) {
    const cancelled = new Promise((r) => this.taking.signal.addEventListener("abort", r, { once: true }));
    await Promise.race([sleep(ms), cancelled]);
    this.check();
  }

  abort() {
    this.cancelled = true;
    this.current?.abort();
    this.taking.abort();
    this.abandon();
  }

  /** `work()`, resumable; when the service refuses it (a 4xx other than 409 or 429: the same uploads
   * would be refused again) every upload started is terminated. What failed for want of a connection
   * is kept, to be continued when the same files are given again in this tab. */
  async run(work) {
    try {
      return await work();
    } catch (err) {
      if (!this.cancelled && !passing(err)) this.abandon();
      throw err;
    }
  }

  /** Terminate every upload started (tus termination) and forget them: nothing is left to resume. */
  abandon() {
    for (const [location, key] of this.started) {
      sessionStorage.removeItem(key);
      fetch(location, { method: "DELETE", headers: authHeaders(TUS) }).catch(() => {});
    }
    this.started.clear();
  }

  /** Send one file with tus 1.0 in 8 MiB PATCHes; its upload URL once complete. A dropped connection or
   * a passing answer is tried again (up to RETRIES times in a row, backing off) from the offset the
   * service reports (HEAD): right after a break the service may still hold the broken PATCH and answer
   * 409, which the next try outwaits. The same file given again in this tab (after a reload, say)
   * continues the upload it started, found by `key`. `onProgress(loaded, note)` counts this file. */
  async sendFile(file, key, onProgress) {
    let location = sessionStorage.getItem(key);
    let offset = null;
    if (location) {
      const stands = await standing(location).catch(() => null);
      if (stands && stands.length === file.size) offset = stands.offset;
    }
    if (offset === null) {
      location = await this.retrying(async () => {
        const created = await send("POST", "/v1/uploads", { track: this.track, headers: { ...TUS,
          "Upload-Length": String(file.size), "Upload-Metadata": `filename ${base64(file.name)}` } });
        return new URL(created.getResponseHeader("Location"), window.location.href).pathname;
      });
      offset = 0;
    } else if (offset > 0) {
      onProgress(offset, `resuming at ${offset.toLocaleString("en")} bytes`);
    }
    sessionStorage.setItem(key, location);
    this.started.set(location, key);
    if (this.cancelled) this.abandon();  // cancelled while the upload was being created
    let failures = 0;
    while (offset < file.size) {
      this.check();
      const start = offset;
      try {
        const done = await send("PATCH", location, {
          track: this.track,
          body: file.slice(start, start + CHUNK_BYTES),
          headers: { ...TUS, "Upload-Offset": String(start), "Content-Type": "application/offset+octet-stream" },
          onProgress: (loaded) => onProgress(start + loaded),
        });
        offset = Number(done.getResponseHeader("Upload-Offset"));
        failures = 0;
      } catch (err) {
        if (this.cancelled || !passing(err) || ++failures > RETRIES) throw err;
        await this.pause(250 * 2 ** failures);
        const stands = await standing(location).catch(() => ({ offset: start }));
        if (stands === null) throw new ApiError(404, { detail: "the service no longer has this upload" });
        offset = stands.offset;
        onProgress(offset, `connection lost; resuming at ${offset.toLocaleString("en")} bytes`);
      }
    }
    return location;
  }

  /** `attempt()` again after a passing failure, up to RETRIES times, backing off. */
  async retrying(attempt) {
    for (let failures = 0; ; ) {
      this.check();
      try {
        return await attempt();
      } catch (err) {
        if (this.cancelled || !passing(err) || ++failures > RETRIES) throw err;
        await this.pause(250 * 2 ** failures);
      }
    }
  }

  /** `POST /v1/models` with JSON naming complete uploads: the service takes them over (they are gone
   * after). One Idempotency-Key for every try, so a retry after a lost answer gets that answer, not a
   * 404 for uploads already taken; while the first try is still reading the model the service answers
   * 409 (key in use), and the page waits and asks again. */
  async take(body) {
    const key = randomKey();
    const deadline = Date.now() + TAKE_PATIENCE_MS;
    for (let failures = 0; ; ) {
      this.check();
      try {
        const model = await api("POST", "/v1/models", { json: body, signal: this.taking.signal,
          headers: { "Idempotency-Key": key } });
        for (const storageKey of this.started.values()) sessionStorage.removeItem(storageKey);
        this.started.clear();  // taken: nothing left to terminate
        return model;
      } catch (caught) {
        if (this.cancelled) throw cancelledError();
        // fetch rejects with a TypeError when no answer came: the connection broke off.
        const err = caught instanceof ApiError ? caught : new ApiError(0, { detail: String(caught.message) });
        const busy = err.status === 409 && String(err.problem?.type || "").endsWith("idempotency-key-in-use");
        if (busy && Date.now() < deadline) {
          await this.pause(1000);
          continue;
        }
        const lost = err.status === 0 || err.status === 429 || err.status === 502 || err.status === 503;
        if (!lost || ++failures > RETRIES) throw err;
        await this.pause(250 * 2 ** failures);
      }
    }
  }
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const uploadKey = (path, file) => `layerfreeze.upload:${path}:${file.size}:${file.lastModified}`;

/** Store a model, with progress. Resumable (tus 1.0) where the service offers it, else one multipart
 * POST /v1/models. `onProgress(loaded, total, note)`. Returns {promise, abort}; abort cancels and
 * abandons the upload. */
export function uploadModel(file, onProgress) {
  const transfer = new Transfer();

  async function resumable() {
    const location = await transfer.sendFile(file, uploadKey(file.name, file),
      (loaded, note) => onProgress(loaded, file.size, note));
    return transfer.take({ upload: location });
  }

  async function multipart() {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = await send("POST", "/v1/models", { track: transfer.track, body: form,
      onProgress: (loaded) => onProgress(loaded, file.size) });
    return JSON.parse(xhr.responseText);
  }

  const promise = (async () => ((await tusLimits()) ? transfer.run(resumable) : multipart()))();
  return { promise, abort: () => transfer.abort() };
}

/** A directory over the limits the service states is refused here, before a byte is sent. */
function checkLimits(files, total, { maxBytes, maxFiles }) {
  if (maxFiles !== null && files.length > maxFiles) {
    throw new ApiError(413, { detail: `the directory holds ${files.length.toLocaleString("en")} files; the `
      + `service takes at most ${maxFiles.toLocaleString("en")} in one model` });
  }
  if (maxBytes !== null && total > maxBytes) {
    throw new ApiError(413, { detail: `the directory holds ${total.toLocaleString("en")} bytes; the service `
      + `takes at most ${maxBytes.toLocaleString("en")} in one model` });
  }
}

/** Store a model directory as one model, with progress over all its files' bytes. `files`: [{path, file}],
 * `path` relative to the model's root ("config.json", "model-00001-of-00002.safetensors"). Where the
 * service offers resumable uploads, each file is one (in turn, each resuming after a dropped connection),
 * then one JSON `POST /v1/models` names them all by path; else one multipart `POST /v1/models` whose
 * `file` parts are named by the paths. Returns {promise, abort}; abort cancels and terminates every
 * upload started. */
export function uploadDirectory(files, onProgress) {
  const transfer = new Transfer();
  const total = files.reduce((n, f) => n + f.file.size, 0);

  async function resumable(limits) {
    checkLimits(files, total, limits);
    const named = [];
    let before = 0;
    for (const { path, file } of files) {
      const base = before;
      const location = await transfer.sendFile(file, uploadKey(path, file),
        (loaded, note) => onProgress(base + loaded, total, note && `${path}: ${note}`));
      named.push({ path, upload: location });
      before += file.size;
    }
    onProgress(total, total);
    return transfer.take({ files: named });
  }

  async function multipart() {
    const form = new FormData();
    for (const { path, file } of files) form.append("file", file, path);
    const xhr = await send("POST", "/v1/models", { track: transfer.track, body: form,
      onProgress: (loaded) => onProgress(Math.min(loaded, total), total) });
    return JSON.parse(xhr.responseText);
  }

  const promise = (async () => {
    const limits = await tusLimits();
    return limits ? transfer.run(() => resumable(limits)) : multipart();
  })();
  return { promise, abort: () => transfer.abort() };
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
