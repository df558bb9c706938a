// What the user gave the page, as a model: one file, or a model directory's files by relative path.
// Dropped folders are walked through the File System entries API (webkitGetAsEntry); a picked folder
// (<input webkitdirectory>) lists its files with their paths. Hidden files and folders (".git",
// ".cache", ".DS_Store") are left out: they are never part of a model.

const hidden = (path) => path.split("/").some((part) => part.startsWith("."));

/** {files: [{path, file}], skipped: n}: the visible files, their paths relative to the model's root. */
function model(list) {
  const files = list.filter((f) => !hidden(f.path)).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, skipped: list.length - files.length };
}

/** Every entry of a directory: readEntries answers in batches until an empty one. */
function readAll(directory) {
  const reader = directory.createReader();
  const out = [];
  return new Promise((resolve, reject) => {
    const next = () => reader.readEntries((batch) => {
      if (!batch.length) return resolve(out);
      out.push(...batch);
      next();
    }, reject);
    next();
  });
}

const fileOf = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));

async function walk(entry, prefix, out) {
  const path = prefix ? `${prefix}/${entry.name}` : entry.name;
  if (entry.isFile) {
    out.push({ path, file: await fileOf(entry) });
  } else if (entry.isDirectory && !entry.name.startsWith(".")) {
    for (const child of await readAll(entry)) await walk(child, path, out);
  }
}

/** A drop: one folder is the model's root (its name is not part of the paths); several items, or files,
 * are the model's top level. Resolves to {files, skipped, folder} (folder: the dropped folder's name). */
export async function fromDrop(dataTransfer) {
  const items = [...(dataTransfer.items || [])].filter((i) => i.kind === "file");
  // Entries must be taken now: the DataTransfer empties once the drop handler yields.
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const plain = [...dataTransfer.files];
  if (entries.length && entries.every(Boolean)) {
    const out = [];
    if (entries.length === 1 && entries[0].isDirectory) {
      for (const child of await readAll(entries[0])) await walk(child, "", out);
      return { ...model(out), folder: entries[0].name };
    }
    for (const entry of entries) await walk(entry, "", out);
    return { ...model(out), folder: null };
  }
  return { ...model(plain.map((file) => ({ path: file.name, file }))), folder: null };
}

/** A picked folder: each file's webkitRelativePath starts with the folder's own name, which goes. */
export function fromPicked(fileList) {
  const list = [...fileList];
  const folder = list.length ? list[0].webkitRelativePath.split("/")[0] : null;
  const out = list.map((file) => ({ path: file.webkitRelativePath.split("/").slice(1).join("/") || file.name, file }));
  return { ...model(out), folder };
}
