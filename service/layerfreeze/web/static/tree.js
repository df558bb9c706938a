// The module tree: an ARIA tree whose rows exist only while their parent is expanded, so a model with
// tens of thousands of parameters costs only the rows on screen. A big module's children come in pages.

const PAGE = 200;
const MARKS = { trainable: "○", frozen: "■", partial: "◐", none: "·" };
const fmt = new Intl.NumberFormat("en");

export const number = (n) => fmt.format(n);
export const percent = (f) => `${(100 * f).toFixed(f > 0 && f < 0.001 ? 2 : 1)}%`;

function node(path) {
  const dot = path.lastIndexOf(".");
  return {
    key: `m:${path}`, path, name: path === "" ? "(model)" : path.slice(dot + 1), type: null, state: null,
    numel: 0, numelTrainable: 0, parameters: 0, children: [], params: [], param: false,
  };
}

function parentOf(path) {
  if (path === "") return null;
  const dot = path.lastIndexOf(".");
  return dot < 0 ? "" : path.slice(0, dot);
}

function rootState(root, s) {
  Object.assign(root, { numel: s.numel_total, numelTrainable: s.numel_trainable, parameters: s.parameters,
    state: s.parameters === 0 ? null : s.frozen === 0 ? "trainable" : s.trainable === 0 ? "frozen" : "partial" });
}

const moduleState = (count, trainable) => (count === 0 ? null : trainable === count ? "trainable"
  : trainable === 0 ? "frozen" : "partial");

/** Index a report: modules by path with their children and parameters, in definition order; `modules`
 * and `params` list the nodes in the report's order, which a columnar preview's columns follow. */
export function indexReport(report) {
  const nodes = new Map();
  const modules = [];
  const params = [];
  const leaves = new Map();
  const ensure = (path) => {
    let n = nodes.get(path);
    if (!n) {
      n = node(path);
      nodes.set(path, n);
      const parent = parentOf(path);
      if (parent !== null) ensure(parent).children.push(n);
    }
    return n;
  };
  ensure("");
  for (const m of report.modules || []) {
    const n = ensure(m.path);
    Object.assign(n, { type: m.type, state: m.state, numel: m.numel, numelTrainable: m.numel_trainable,
      parameters: m.parameters });
    modules.push(n);
  }
  const root = nodes.get("");
  const rootListed = (report.modules || []).some((m) => m.path === "");
  if (!rootListed) rootState(root, report.summary);
  for (const p of report.parameters || []) {
    const owner = ensure(p.module || "");
    const leaf = {
      key: `p:${p.name}`, path: p.name, name: p.name.slice(p.name.lastIndexOf(".") + 1), param: true,
      type: `${p.dtype} [${p.shape.join("×")}]`, state: p.requires_grad ? "trainable" : "frozen",
      numel: p.numel, numelTrainable: p.requires_grad ? p.numel : 0, parameters: 1, children: [], params: [],
      rule: p.rule, was: p.was,
    };
    owner.params.push(leaf);
    params.push(leaf);
    leaves.set(leaf.key, leaf);
  }
  return { root, nodes, modules, params, leaves, rootListed };
}

const kids = (n) => [...n.children, ...n.params];

export class Tree {
  /** `onPick(node)`: the user clicked a row or pressed Enter on it. */
  constructor(ul, { onPick }) {
    this.ul = ul;
    this.onPick = onPick;
    this.index = null;
    this.expanded = new Set(["m:"]);
    this.shown = new Map(); // key -> how many children are rendered
    this.flagged = new Map(); // module path -> warning text
    ul.addEventListener("click", (e) => this.#click(e));
    ul.addEventListener("keydown", (e) => this.#key(e));
  }

  setReport(report, flagged = new Map()) {
    const same = this.index && this.source === report.input?.sha256;
    this.source = report.input?.sha256;
    if (same) {  // the same model under another spec: only states changed; keep every element
      this.index = indexReport(report);
      this.flagged = flagged;
      this.#refill();
      return;
    }
    this.expanded = new Set(["m:"]);  // another model: start from its first level again
    this.shown.clear();
    const focusKey = this.ul.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    const oldScroll = this.ul.scrollTop;
    this.index = indexReport(report);
    this.flagged = flagged;
    this.ul.replaceChildren(this.#item(this.index.root, 1, 1, 1));
    this.ul.scrollTop = oldScroll;
    const target = (focusKey && this.ul.querySelector(`[data-key="${CSS.escape(focusKey)}"]`)) || this.#items()[0];
    if (target) {
      target.tabIndex = 0;
      if (focusKey) target.focus({ preventScroll: true });
    }
  }

  /** A columnar preview (`?view=columns`) of the model shown: its states written into the nodes, then
   * into the rows on screen. False when its columns do not fit this model's report (then ask for the
   * full preview). */
  applyColumns(view, flagged = new Map()) {
    const index = this.index;
    const { parameters: p, modules: m } = view;
    if (!index || p.count !== index.params.length || m.count !== index.modules.length
        || p.requires_grad.length !== p.count) return false;
    index.params.forEach((leaf, i) => {
      const on = p.requires_grad.charCodeAt(i) === 49;  // "1"
      leaf.state = on ? "trainable" : "frozen";
      leaf.numelTrainable = on ? leaf.numel : 0;
      leaf.rule = null;
    });
    for (const [first, count, rule] of p.decided_by) {
      for (let i = first; i < first + count; i += 1) index.params[i].rule = rule;
    }
    index.modules.forEach((n, j) => {
      n.numelTrainable = m.numel_trainable[j];
      n.state = moduleState(n.parameters, m.trainable[j]);
    });
    if (!index.rootListed) rootState(index.root, view.summary);
    this.flagged = flagged;
    this.#refill();
    return true;
  }

  #refill() {
    for (const li of this.#items()) {
      const n = this.#find(li.dataset.key);
      if (n) this.#fill(li, n);
    }
  }

  clear() {
    this.index = null;
    this.source = null;
    this.expanded = new Set(["m:"]);
    this.shown.clear();
    this.ul.replaceChildren();
  }

  #find(key) {
    if (!this.index) return null;
    if (key.startsWith("m:")) return this.index.nodes.get(key.slice(2)) || null;
    return this.index.leaves.get(key) || null;
  }

  #item(n, level, pos, size) {
    const li = document.createElement("li");
    li.setAttribute("role", "treeitem");
    li.setAttribute("aria-level", String(level));
    li.setAttribute("aria-posinset", String(pos));
    li.setAttribute("aria-setsize", String(size));
    li.setAttribute("aria-selected", "false");
    li.tabIndex = -1;
    li.dataset.key = n.key;
    const hasKids = kids(n).length > 0;
    const row = document.createElement("div");
    row.style.paddingLeft = `${0.3 + 1.1 * (level - 1)}rem`;
    for (const cls of ["twisty", "badge", "name", "type", "numel", "pct"]) {
      const span = document.createElement("span");
      span.className = cls;
      row.append(span);
    }
    row.firstChild.setAttribute("aria-hidden", "true");
    row.firstChild.textContent = hasKids ? "▸" : "";
    li.append(row);
    this.#fill(li, n);
    if (hasKids) {
      const open = this.expanded.has(n.key);
      li.setAttribute("aria-expanded", String(open));
      if (open) this.#renderChildren(li, n, level);
    }
    return li;
  }

  /** Write a node's state into its row (also to refresh rows in place when only states changed). */
  #fill(li, n) {
    const state = n.state || "none";
    const fraction = n.numel ? n.numelTrainable / n.numel : 0;
    const warning = this.flagged.get(n.path);
    li.setAttribute("aria-label", [n.param ? `parameter ${n.name}` : n.name, n.type || "type unknown",
      n.state ? state : "no parameters", `${number(n.numel)} elements`, `${percent(fraction)} trainable`,
      warning ? `warning: ${warning}` : ""].filter(Boolean).join(", "));
    const row = li.firstChild;
    row.className = `row state-${state}${n.param ? " param" : ""}`;
    const [, badge, name, type, numel, pct] = row.children;
    badge.textContent = `${MARKS[state]} ${n.state ? state : "no params"}`;
    name.textContent = n.name;
    name.title = n.path || "(the whole model)";
    if (warning) {
      const w = document.createElement("span");
      w.className = "warn";
      w.textContent = " ⚠";
      w.title = warning;
      name.append(w);
    }
    type.textContent = n.param ? n.type : (n.type || "").split(".").pop();
    type.title = n.type || "type not recorded in this file";
    numel.textContent = number(n.numel);
    numel.title = `${number(n.numel)} elements in ${number(n.parameters)} tensors`;
    pct.textContent = n.numel ? percent(fraction) : "";
  }

  #renderChildren(li, n, level) {
    li.querySelector(":scope > .row > .twisty").textContent = "▾";
    const all = kids(n);
    const count = Math.min(all.length, this.shown.get(n.key) || PAGE);
    const group = document.createElement("ul");
    group.setAttribute("role", "group");
    all.slice(0, count).forEach((c, i) => group.append(this.#item(c, level + 1, i + 1, all.length)));
    if (count < all.length) {
      const more = document.createElement("li");
      more.setAttribute("role", "none");
      more.className = "more";
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `Show ${number(Math.min(PAGE, all.length - count))} more of ${number(all.length - count)}`;
      button.addEventListener("click", () => {
        this.shown.set(n.key, count + PAGE);
        this.#collapse(li);
        this.#expand(li);
        const next = this.ul.querySelector(`[data-key="${CSS.escape(all[count].key)}"]`);
        if (next) this.#focus(next);
      });
      more.append(button);
      group.append(more);
    }
    li.append(group);
  }

  #expand(li) {
    const n = this.#find(li.dataset.key);
    if (!n || li.getAttribute("aria-expanded") !== "false") return;
    this.expanded.add(n.key);
    li.setAttribute("aria-expanded", "true");
    this.#renderChildren(li, n, Number(li.getAttribute("aria-level")));
  }

  #collapse(li) {
    if (li.getAttribute("aria-expanded") !== "true") return;
    this.expanded.delete(li.dataset.key);
    li.setAttribute("aria-expanded", "false");
    li.querySelector(":scope > ul")?.remove();
    li.querySelector(":scope > .row > .twisty").textContent = "▸";
  }

  toggle(li) {
    if (li.getAttribute("aria-expanded") === "true") this.#collapse(li);
    else this.#expand(li);
  }

  #items() {
    return [...this.ul.querySelectorAll("li[role=treeitem]")];
  }

  #focus(li) {
    for (const other of this.ul.querySelectorAll("li[tabindex='0']")) other.tabIndex = -1;
    li.tabIndex = 0;
    li.focus();
  }

  #pick(li) {
    const n = this.#find(li.dataset.key);
    if (n) this.onPick(n);
  }

  #click(e) {
    const li = e.target.closest("li[role=treeitem]");
    if (!li || !e.target.closest(".row")) return;
    this.#focus(li);
    if (e.target.closest(".twisty")) this.toggle(li);
    else this.#pick(li);
  }

  #key(e) {
    const li = e.target.closest("li[role=treeitem]");
    if (!li || e.target !== li) return;
    const items = this.#items();
    const at = items.indexOf(li);
    const go = (target) => target && this.#focus(target);
    switch (e.key) {
      case "ArrowDown": go(items[at + 1]); break;
      case "ArrowUp": go(items[at - 1]); break;
      case "Home": go(items[0]); break;
      case "End": go(items[items.length - 1]); break;
      case "ArrowRight":
        if (li.getAttribute("aria-expanded") === "false") this.#expand(li);
        else if (li.getAttribute("aria-expanded") === "true") go(items[at + 1]);
        break;
      case "ArrowLeft":
        if (li.getAttribute("aria-expanded") === "true") this.#collapse(li);
        else go(li.parentElement.closest("li[role=treeitem]"));
        break;
      case " ": this.toggle(li); break;
      case "Enter": this.#pick(li); break;
      default: return;
    }
    e.preventDefault();
  }
}
