// Building elements: el("button", {class: "x", onclick: f}, "label"). Properties that are not strings
// (handlers, booleans) are set as properties, strings as attributes; children are nodes or text.
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}
