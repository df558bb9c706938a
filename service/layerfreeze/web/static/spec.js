// The spec editor: one spec object, shown twice (rules as rows, and the raw JSON), kept in step both ways.
// Problems from the service arrive as JSON pointers (/rules/0/names/1) and are shown beside that field.
import { el } from "./dom.js";

const LIST_KINDS = ["names", "regex", "types", "params"];
const KINDS = [...LIST_KINDS, "until"];
const KIND_HELP = {
  names: "module or parameter name patterns (*, ?, [0-5], **)",
  regex: "regular expressions over whole parameter names",
  types: "module class names (Linear, torch.nn.BatchNorm2d)",
  params: "parameter leaf names (weight, bias)",
  until: "a module path: everything defined before it, and it",
};


/** A rule the rows can show: an action and exactly one selector the rows know. */
export function simpleKind(rule) {
  if (!rule || typeof rule !== "object" || Array.isArray(rule)) return null;
  const keys = Object.keys(rule).filter((k) => k !== "action");
  if (keys.length !== 1 || !["freeze", "unfreeze"].includes(rule.action ?? "freeze")) return null;
  const kind = keys[0];
  const value = rule[kind];
  if (LIST_KINDS.includes(kind)) return Array.isArray(value) && value.every((v) => typeof v === "string") ? kind : null;
  return kind === "until" && typeof value === "string" ? kind : null;
}

/** JSON with one rule a line: as readable as indented JSON at a third of the height. */
export function formatSpec(spec) {
  if (!spec || typeof spec !== "object" || Array.isArray(spec)) return JSON.stringify(spec, null, 2);
  const lines = Object.entries(spec).map(([key, value]) => {
    if (key === "rules" && Array.isArray(value) && value.length) {
      return `  "rules": [\n${value.map((r) => `    ${JSON.stringify(r)}`).join(",\n")}\n  ]`;
    }
    return `  ${JSON.stringify(key)}: ${JSON.stringify(value)}`;
  });
  return lines.length ? `{\n${lines.join(",\n")}\n}` : "{}";
}

export function parsePointer(pointer) {
  if (!pointer) return [];
  return pointer.split("/").slice(1).map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

export class SpecEditor {
  constructor({ rules, json, jsonError, strict, errors, warnings, onChange }) {
    Object.assign(this, { rulesEl: rules, jsonEl: json, jsonErrorEl: jsonError, strictEl: strict,
      errorsEl: errors, warningsEl: warnings, onChange });
    this.spec = { rules: [] };
    this.jsonValid = true;
    this.problems = [];
    json.addEventListener("input", () => this.#fromJson());
    strict.addEventListener("change", () => {
      if (strict.checked) delete this.spec.strict;
      else this.spec.strict = false;
      this.#changed({ rows: false });
    });
    this.#render();
    this.#writeJson();
  }

  get rules() {
    return Array.isArray(this.spec.rules) ? this.spec.rules : [];
  }

  /** Some row's value is still empty (a rule just added): not worth a preview yet. */
  hasBlankValue() {
    return this.rules.some((rule) => {
      const kind = simpleKind(rule);
      return kind && (kind === "until" ? [rule.until] : rule[kind]).some((v) => v.trim() === "");
    });
  }

  /** A rule that flips a module's (or parameter's) state: freeze what trains, unfreeze what is frozen. */
  addRuleFor(node) {
    const action = node.state === "frozen" ? "unfreeze" : "freeze";
    const name = node.path === "" ? "**" : node.path;
    this.addRule({ action, names: [name] });
  }

  addRule(rule) {
    if (!Array.isArray(this.spec.rules)) this.spec.rules = [];
    this.spec.rules.push(rule);
    this.#changed({ rows: true });
  }

  // -- JSON <-> rows -------------------------------------------------------------------------------------

  #fromJson() {
    let parsed;
    try {
      parsed = JSON.parse(this.jsonEl.value);
    } catch (err) {
      this.jsonValid = false;
      this.jsonEl.setAttribute("aria-invalid", "true");
      this.jsonErrorEl.textContent = `Not valid JSON: ${err.message}`;
      this.onChange({ valid: false });
      return;
    }
    this.jsonValid = true;
    this.jsonEl.removeAttribute("aria-invalid");
    this.jsonErrorEl.textContent = "";
    this.spec = parsed;
    this.strictEl.checked = !(parsed && parsed.strict === false);
    this.#render();
    this.onChange({ valid: true, typing: true });
  }

  #writeJson() {
    this.jsonEl.value = formatSpec(this.spec);
    this.jsonValid = true;
    this.jsonEl.removeAttribute("aria-invalid");
    this.jsonErrorEl.textContent = "";
  }

  #changed({ rows, focus, typing = false }) {
    if (rows) this.#render(focus);
    this.#writeJson();
    this.onChange({ valid: true, typing });
  }

  // -- rows ----------------------------------------------------------------------------------------------

  #render(focus) {
    const active = focus || this.#focusId();
    const rules = this.rules;
    const rows = rules.map((rule, i) => this.#row(rule, i, rules.length));
    if (!rows.length) rows.push(el("p", { class: "hint" }, "No rules: the report shows the model as it is. " +
      "Add a rule, or click a module in the tree."));
    this.rulesEl.replaceChildren(...rows);
    this.rulesEl.setAttribute("role", rules.length ? "list" : "group");  // the hint is no list item
    if (active) document.getElementById(active)?.focus();
    this.#place();
  }

  #focusId() {
    const a = document.activeElement;
    return a && this.rulesEl.contains(a) && a.id ? a.id : null;
  }

  #row(rule, i, count) {
    const kind = simpleKind(rule);
    const n = i;  // numbered from 0, as the service's messages and JSON pointers count
    const head = el("div", { class: "rule-head" }, el("span", { class: "index" }, `#${n}`));
    const row = el("div", { class: "rule", role: "listitem", "aria-label": `Rule ${n}` }, head);
    const button = (label, text, id, onClick, disabled = false) => el("button",
      { type: "button", "aria-label": label, id, disabled, onclick: onClick }, text);
    if (kind) {
      const action = el("select", { id: `r${i}-action`, "aria-label": `Rule ${n} action` },
        ...["freeze", "unfreeze"].map((a) => el("option", { value: a }, a)));
      action.value = rule.action ?? "freeze";
      action.addEventListener("change", () => {
        rule.action = action.value;
        this.#changed({ rows: false });
      });
      const select = el("select", { id: `r${i}-kind`, "aria-label": `Rule ${n} selector kind` },
        ...KINDS.map((k) => el("option", { value: k, title: KIND_HELP[k] }, k)));
      select.value = kind;
      select.addEventListener("change", () => this.#setKind(i, select.value));
      head.append(action, select);
    } else {
      head.append(el("span", { class: "hint" }, "a rule the rows cannot show: edit it in the JSON"));
    }
    head.append(el("span", { class: "spacer" }),
      button(`Move rule ${n} up`, "↑", `r${i}-up`, () => this.#move(i, -1), i === 0),
      button(`Move rule ${n} down`, "↓", `r${i}-down`, () => this.#move(i, 1), i === count - 1),
      button(`Remove rule ${n}`, "✕", `r${i}-remove`, () => this.#remove(i)));
    row.append(el("p", { class: "field-error", id: `err-r${i}` }));
    if (!kind) {
      row.append(el("pre", { class: "complex mono" }, JSON.stringify(rule)));
      return row;
    }
    const values = el("div", { class: "values" });
    const list = kind === "until" ? [rule.until] : rule[kind];
    list.forEach((value, j) => {
      const input = el("input", { type: "text", id: `r${i}-v${j}`, value, spellcheck: false,
        "aria-label": `Rule ${n} ${kind} value ${j}`, "aria-describedby": `err-r${i}-v${j}`,
        placeholder: KIND_HELP[kind] });
      input.addEventListener("input", () => {
        if (kind === "until") rule.until = input.value;
        else rule[kind][j] = input.value;
        this.#changed({ rows: false, typing: true });
      });
      const line = el("div", { class: "value" }, input);
      if (kind !== "until") {
        line.append(button(`Remove rule ${n} value ${j}`, "−", `r${i}-v${j}-remove`, () => {
          rule[kind].splice(j, 1);
          this.#changed({ rows: true, focus: `r${i}-v${Math.max(0, j - 1)}` });
        }, list.length === 1));
      }
      values.append(line, el("p", { class: "field-error", id: `err-r${i}-v${j}` }));
    });
    if (kind !== "until") {
      values.append(el("div", {}, el("button", { type: "button", id: `r${i}-add`,
        "aria-label": `Add a value to rule ${n}`, onclick: () => {
          rule[kind].push("");
          this.#changed({ rows: true, focus: `r${i}-v${rule[kind].length - 1}` });
        } }, "+ value")));
    }
    row.append(values);
    return row;
  }

  #setKind(i, kind) {
    const rule = this.rules[i];
    const old = simpleKind(rule);
    const values = old === "until" ? [rule.until] : [...rule[old]];
    delete rule[old];
    rule[kind] = kind === "until" ? values[0] ?? "" : values;
    this.#changed({ rows: true, focus: `r${i}-kind` });
  }

  #move(i, by) {
    const rules = this.rules;
    [rules[i], rules[i + by]] = [rules[i + by], rules[i]];
    this.#changed({ rows: true, focus: `r${i + by}-${by < 0 ? "up" : "down"}` });
  }

  #remove(i) {
    this.rules.splice(i, 1);
    const next = this.rules.length ? `r${Math.min(i, this.rules.length - 1)}-remove` : "rule-add";
    this.#changed({ rows: true, focus: next });
  }

  // -- problems and warnings -----------------------------------------------------------------------------

  /** Where a pointer's message goes: the value's field, the rule's row, or the spec as a whole. */
  #target(pointer) {
    const t = parsePointer(pointer);
    if (t[0] !== "rules" || t.length < 2 || !/^\d+$/.test(t[1])) return { el: null };
    const i = Number(t[1]);
    const kind = simpleKind(this.rules[i]);
    if (kind && t[2] === kind) {
      const j = kind === "until" ? 0 : Number(t[3]);
      const field = document.getElementById(`err-r${i}-v${j}`);
      if (field) return { el: field, input: document.getElementById(`r${i}-v${j}`), rule: i, value: j };
    }
    return { el: document.getElementById(`err-r${i}`), rule: i };
  }

  /** Replace the value a suggestion is for: the one the pointer names, or the rule's only value. */
  #apply(pointer, name) {
    const target = this.#target(pointer);
    if (target.rule === undefined) return;
    const rule = this.rules[target.rule];
    const kind = simpleKind(rule);
    if (!kind) return;
    let j = target.value;
    if (j === undefined) {
      const specific = this.problems.find((p) => p.pointer.startsWith(`/rules/${target.rule}/${kind}/`));
      j = specific ? Number(parsePointer(specific.pointer)[3]) : 0;
    }
    if (kind === "until") rule.until = name;
    else rule[kind][j] = name;
    this.#changed({ rows: true, focus: `r${target.rule}-v${j}` });
  }

  #message(text, suggestions, pointer, cls) {
    const p = el("span", { class: cls }, text);
    if (suggestions && suggestions.length) {
      p.append(". Did you mean: ");
      for (const s of suggestions) {
        p.append(el("button", { type: "button", class: "suggest", title: `use ${s}`,
          onclick: () => this.#apply(pointer, s) }, s));
      }
    }
    return p;
  }

  /** The errors of a 422 answer (or none): each beside its field, the rest under the rules. */
  showProblems(problems, detail = "") {
    this.problems = problems || [];
    this.detail = detail;
    this.#place();
  }

  showWarnings(warnings) {
    this.warnings = warnings || [];
    this.#place();
  }

  #place() {
    for (const e of this.rulesEl.querySelectorAll(".field-error")) e.replaceChildren();
    for (const e of this.rulesEl.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
    const loose = [];
    const specific = new Set((this.problems || []).map((p) => this.#target(p.pointer))
      .filter((t) => t.value !== undefined).map((t) => t.rule));
    for (const p of this.problems || []) {
      const target = this.#target(p.pointer);
      // "rule N selects no parameter" repeats what its value's own error says, suggestions and all
      if (target.value === undefined && specific.has(target.rule) && parsePointer(p.pointer).length === 2) continue;
      const message = this.#message(p.message, p.suggestions, p.pointer, "problem");
      if (target.el) {
        target.el.append(message);
        target.input?.setAttribute("aria-invalid", "true");
      } else {
        loose.push(el("p", {}, `${p.pointer || "/"}: `, message));
      }
    }
    const count = (this.problems || []).length;
    const summary = count ? [el("p", {}, `The spec does not fit this model: ${count} problem${count > 1 ? "s" : ""}` +
      (loose.length < count ? ", shown beside the fields." : "."))] : [];
    const detail = !count && this.detail ? [el("p", {}, this.detail)] : [];
    this.errorsEl.replaceChildren(...summary, ...loose, ...detail);

    const general = [];
    for (const w of this.warnings || []) {
      // A warning about a spec value carries its pointer and the nearest names; others name a rule.
      const m = /^(\/rules\/\d+\S*): (.*)$/s.exec(w.message);
      const rule = w.rule !== null && w.rule !== undefined ? `/rules/${w.rule}` : "";
      const pointer = w.pointer || (m ? m[1] : rule);
      const target = pointer ? this.#target(pointer) : { el: null };
      const text = m ? m[2] : w.message;
      const suggestions = w.suggestions && w.suggestions.length ? w.suggestions
        : w.code === "rule_problem" ? w.names : [];
      const box = el("div", { class: "warning", "data-code": w.code }, this.#message(text, suggestions, pointer, ""));
      if (target.el) target.el.append(box);
      else general.push(box);
    }
    this.warningsEl.replaceChildren(...general);
  }
}
