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

/** Store a model (POST /v1/models, one `file` part). XMLHttpRequest, because fetch reports no upload
 * progress. Returns {promise, abort}. */
export function uploadModel(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", "/v1/models");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = "text";
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        body = { detail: xhr.responseText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { detail: "the upload broke off (network error)" }));
    xhr.onabort = () => reject(new ApiError(0, { detail: "upload cancelled" }));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
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
