// The stored-model and job lists: a page at a time (the API's cursors), and deleting with a confirmation
// in place. Every control is a labelled button; an error (a running job's 409, say) shows in the row.
import { ApiError, api } from "./api.js";
import { el } from "./dom.js";

const CONTROLS = "button, a[href]";

/** A list fed by a paged endpoint (`{items, next}`): `refresh()` shows the first page, the *Show more*
 * button appends the page its cursor names. `row(item)` builds one list element.
 * One row at a time is in the Tab order (a roving tab stop): Up and Down (Home, End) move between rows,
 * Tab between the controls of the row, so a long list costs a keyboard user two or three Tab presses. */
export class PagedList {
  constructor({ body, more, first, row, onError }) {
    Object.assign(this, { body, moreButton: more, first, row, onError });
    this.next = null;
    this.items = [];
    this.active = null;
    more.addEventListener("click", () => this.more());
    body.addEventListener("focusin", (e) => this.#activate(this.#rowOf(e.target)));
    body.addEventListener("keydown", (e) => this.#key(e));
  }

  #rowOf(node) {
    let row = node;
    while (row && row.parentElement !== this.body) row = row.parentElement;
    return row;
  }

  /** Make `row` the one whose controls Tab reaches (the first row when it is gone). */
  #activate(row) {
    const rows = [...this.body.children];
    this.active = rows.includes(row) ? row : rows[0] || null;
    for (const r of rows) {
      for (const c of r.querySelectorAll(CONTROLS)) c.tabIndex = r === this.active ? 0 : -1;
    }
  }

  #key(e) {
    const row = this.#rowOf(e.target);
    if (!row || !["ArrowDown", "ArrowUp", "Home", "End"].includes(e.key)) return;
    if (e.target.closest(".confirm")) return;  // the question keeps the keys
    const rows = [...this.body.children];
    const at = rows.indexOf(row);
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: rows.length - 1 }[e.key];
    const target = rows[Math.max(0, Math.min(rows.length - 1, to))];
    e.preventDefault();
    if (!target || target === row) return;
    const column = [...row.querySelectorAll(CONTROLS)].indexOf(e.target);
    const controls = [...target.querySelectorAll(CONTROLS)];
    (controls[Math.max(0, column)] || controls[0])?.focus();
  }

  /** Busy while a deletion is being confirmed: a refresh would take the question away. */
  get confirming() {
    return Boolean(this.body.querySelector(".confirm"));
  }

  async refresh() {
    try {
      const page = await api("GET", this.first);
      this.items = page.items;
      const activeId = this.active?.dataset.id;
      this.body.replaceChildren(...page.items.map((item) => this.row(item)));
      this.#activate([...this.body.children].find((r) => r.dataset.id === activeId));
      this.#setNext(page.next);
      return page;
    } catch (err) {
      this.onError(err);
      return null;
    }
  }

  async more() {
    if (!this.next) return;
    const focusAt = this.items.length;
    try {
      const page = await api("GET", this.next);
      this.items.push(...page.items);
      this.body.append(...page.items.map((item) => this.row(item)));
      this.#activate(this.active);
      this.#setNext(page.next);
      // Keyboard users go on from the first new row rather than from the button that may have gone.
      this.body.children[focusAt]?.querySelector("button, a[href]")?.focus();
    } catch (err) {
      this.onError(err);
    }
  }

  #setNext(next) {
    this.next = next;
    this.moreButton.hidden = !next;
  }

  remove(row) {
    const i = [...this.body.children].indexOf(row);
    if (i >= 0) this.items.splice(i, 1);
    row.remove();
    if (this.active === row) this.#activate(null);
  }
}

/** A *Delete* button that first asks, in place: "Delete X? [Yes, delete] [Keep]". `run()` does the
 * deletion; its error is shown beside the question, which stays so the user can retry or keep. */
export function deleteButton({ name, what, run, slot }) {
  const button = el("button", { type: "button", class: "danger", "aria-label": `Delete ${what} ${name}` },
    "Delete");
  button.addEventListener("click", () => {
    const error = el("span", { class: "row-error", role: "alert" });
    const yes = el("button", { type: "button", class: "danger", "aria-label": `Yes, delete ${what} ${name}` },
      "Yes, delete");
    const keep = el("button", { type: "button", "aria-label": `Keep ${what} ${name}` }, "Keep");
    const box = el("span", { class: "confirm" }, el("span", {}, `Delete ${what} ${name}?`), yes, keep, error);
    const restore = () => {
      box.replaceWith(button);
      button.focus();
    };
    keep.addEventListener("click", restore);
    box.addEventListener("keydown", (e) => {
      if (e.key === "Escape") restore();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      error.textContent = "";
      try {
        await run();
      } catch (err) {
        yes.disabled = false;
        const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : "";
        error.textContent = `Not deleted${status}: ${err.message}`;
        yes.focus();
      }
    });
    button.replaceWith(box);
    keep.focus();  // the safe answer first
  });
  if (slot) slot.append(button);
  return button;
}
