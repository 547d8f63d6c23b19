// Leafwatch labelling page: the queue of kept samples, lowest margin
// first; one click or key accepts the model's label, another is typed;
// several are labelled at once; the last action can be undone.
"use strict";
(() => {
  const token = document.querySelector('meta[name="leafwatch-token"]').content;
  const $ = (s) => document.querySelector(s);
  const state = { labels: [], byDisplay: new Map(), display: new Map(), target: 20, offset: 0, total: 0, focus: -1 };
  const PAGE = 60;

  async function api(path, body) {
    const opt = body === undefined ? {} : {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-Leafwatch-Token": token },
    };
    const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opt));
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  function toast(msg, undo) {
    const t = $("#toast");
    t.textContent = msg;
    if (undo) {
      const b = document.createElement("button");
      b.textContent = "Undo";
      b.addEventListener("click", doUndo);
      t.appendChild(b);
    }
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  function status(msg) { $("#status").textContent = msg; }

  function fillSelect(sel, values, names) {
    const keep = sel.value;
    sel.length = 1;
    values.forEach((v, i) => sel.add(new Option(names ? names[i] : v, v)));
    sel.value = keep;
  }

  async function loadSummary() {
    const s = await api("/label/api/summary");
    state.labels = s.labels;
    state.target = s.target;
    state.display = new Map(s.labels.map((l) => [l.label, l.display]));
    state.byDisplay = new Map();
    s.labels.forEach((l) => { state.byDisplay.set(l.display.toLowerCase(), l.label); state.byDisplay.set(l.label.toLowerCase(), l.label); });
    const dl = $("#label-list");
    dl.replaceChildren(...s.labels.map((l) => { const o = document.createElement("option"); o.value = l.display; return o; }));
    fillSelect($("#f-camera"), s.cameras);
    fillSelect($("#f-rule"), s.rules);
    const classes = s.labels.filter((l) => l.label !== "unsure");
    fillSelect($("#f-pred"), classes.map((l) => l.label), classes.map((l) => l.display));
    const sum = s.summary;
    let enough = 0;
    const rows = classes.map((l) => {
      const n = (sum.labelled || {})[l.label] || 0;
      if (n >= s.target) enough++;
      const row = document.createElement("div");
      row.className = "cls" + (n < s.target ? " short" : "");
      row.dataset.label = l.label;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = l.display;
      name.title = l.label;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("i");
      fill.style.width = Math.min(100, (100 * n) / s.target) + "%";
      bar.appendChild(fill);
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = n + "/" + s.target;
      row.append(name, bar, count);
      return row;
    });
    $("#summary-classes").replaceChildren(...rows);
    const unsure = (sum.labelled || {}).unsure || 0;
    $("#summary-total").textContent = `${sum.total - sum.unlabelled - unsure} labelled (${sum.baseline_labelled} of them random baseline samples), ${unsure} unsure, ${sum.unlabelled} waiting · ${enough} of ${classes.length} classes have ${s.target}` +
      (s.budget_full ? " · the samples budget is full: keeping has stopped" : "");
  }

  function query() {
    const p = new URLSearchParams({ limit: PAGE, offset: state.offset });
    for (const [k, id] of [["camera", "#f-camera"], ["rule", "#f-rule"], ["pred", "#f-pred"]]) {
      if ($(id).value) p.set(k, $(id).value);
    }
    return "/label/api/queue?" + p;
  }

  function card(s) {
    const c = $("#card-tpl").content.firstElementChild.cloneNode(true);
    c.dataset.id = s.id;
    c.dataset.pred = s.top.length ? s.top[0].label : "";
    c.querySelector(".region").src = `/label/img/${encodeURIComponent(s.id)}/region`;
    c.querySelector(".frame-img").src = `/label/img/${encodeURIComponent(s.id)}/frame`;
    const box = c.querySelector(".box");
    const [fw, fh] = s.frame_size;
    Object.assign(box.style, { left: (100 * s.box[0]) / fw + "%", top: (100 * s.box[1]) / fh + "%", width: (100 * s.box[2]) / fw + "%", height: (100 * s.box[3]) / fh + "%" });
    const ol = c.querySelector(".top");
    s.top.slice(0, 3).forEach((t, i) => {
      const li = document.createElement("li");
      li.textContent = `${s.displays[i]} — ${Math.round(100 * t.prob)}%`;
      ol.appendChild(li);
    });
    c.querySelector(".where").textContent = `${s.camera} · ${new Date(s.time).toLocaleString()} · ${s.region}`;
    c.querySelector(".rules").replaceChildren(...s.rules.map((r) => { const e = document.createElement("span"); e.textContent = r; return e; }));
    const acc = c.querySelector(".accept");
    acc.textContent = "✓ " + (s.displays[0] || "?");
    acc.addEventListener("click", () => label([s.id], c.dataset.pred));
    c.querySelector(".notleaf").addEventListener("click", () => label([s.id], "not_a_leaf"));
    c.querySelector(".unsure").addEventListener("click", () => label([s.id], "unsure"));
    c.querySelector(".select").addEventListener("change", (e) => c.classList.toggle("selected", e.target.checked));
    c.addEventListener("focus", () => { state.focus = cards().indexOf(c); });
    return c;
  }

  const cards = () => Array.from(document.querySelectorAll("#queue .card"));
  const selected = () => cards().filter((c) => c.querySelector(".select").checked);

  async function loadQueue(append) {
    if (!append) state.offset = 0;
    const q = await api(query());
    state.total = q.total;
    const els = q.samples.map(card);
    if (append) $("#queue").append(...els); else $("#queue").replaceChildren(...els);
    state.offset += q.samples.length;
    $("#more").hidden = state.offset >= q.total;
    status(q.total ? `${q.total} samples wait for a label; the least certain first` : "Nothing waits for a label.");
    if (!append && els.length) focusCard(0);
  }

  function focusCard(i) {
    const cs = cards();
    if (!cs.length) return;
    i = Math.max(0, Math.min(cs.length - 1, i));
    state.focus = i;
    cs[i].focus();
  }

  async function label(ids, lab) {
    if (!ids.length) { toast("Select samples first (x, or the checkboxes)"); return; }
    try {
      const r = await api("/label/api/label", { ids, label: lab });
      const name = state.display.get(lab) || lab;
      const keep = state.focus;
      ids.forEach((id) => { const c = document.querySelector(`#queue .card[data-id="${CSS.escape(id)}"]`); if (c) c.remove(); });
      state.offset = Math.max(0, state.offset - ids.length);
      toast(`Labelled ${r.changed + r.same} as ${name}`, true);
      await loadSummary();
      if (!cards().length) await loadQueue(false); else focusCard(keep);
      status(`${Math.max(0, state.total - ids.length)} samples wait for a label`);
      state.total = Math.max(0, state.total - ids.length);
    } catch (e) { toast("Not labelled: " + e.message); }
  }

  async function doUndo() {
    try {
      const u = await api("/label/api/undo", {});
      toast(`Undone: ${u.restored} back in the queue` + (u.skipped ? ` (${u.skipped} relabelled since, left as they are)` : ""));
      await Promise.all([loadSummary(), loadQueue(false)]);
    } catch (e) { toast("Nothing undone: " + e.message); }
  }

  function typedLabel() {
    const v = $("#bulk-label").value.trim().toLowerCase();
    return state.byDisplay.get(v) || "";
  }

  function targets() {
    const sel = selected().map((c) => c.dataset.id);
    if (sel.length) return sel;
    const c = cards()[state.focus];
    return c ? [c.dataset.id] : [];
  }

  function applyTyped() {
    const l = typedLabel();
    if (!l) { toast("Pick a label from the list (type part of its name)"); return; }
    $("#bulk-label").value = "";
    label(targets(), l);
  }

  document.addEventListener("keydown", (e) => {
    if (e.target === $("#bulk-label")) {
      if (e.key === "Enter") { e.preventDefault(); applyTyped(); }
      if (e.key === "Escape") { e.target.blur(); focusCard(state.focus); }
      return;
    }
    if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" && e.target.type !== "checkbox") return;
    if (e.ctrlKey && e.key === "z") { e.preventDefault(); doUndo(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const cs = cards(), c = cs[state.focus];
    switch (e.key) {
      case "j": case "ArrowDown": case "ArrowRight": focusCard(state.focus + 1); break;
      case "k": case "ArrowUp": case "ArrowLeft": focusCard(state.focus - 1); break;
      case "Enter": case "a":
        if (e.target.tagName === "BUTTON") return;
        if (selected().length) { const s = selected(); label(s.map((x) => x.dataset.id), s[0].dataset.pred); }
        else if (c) label([c.dataset.id], c.dataset.pred);
        break;
      case "n": label(targets(), "not_a_leaf"); break;
      case "u": label(targets(), "unsure"); break;
      case "x": case " ":
        if (c) { const b = c.querySelector(".select"); b.checked = !b.checked; c.classList.toggle("selected", b.checked); }
        break;
      case "/": case "l": $("#bulk-label").focus(); break;
      case "z": doUndo(); break;
      default: return;
    }
    e.preventDefault();
  });

  $("#bulk-apply").addEventListener("click", applyTyped);
  $("#undo").addEventListener("click", doUndo);
  $("#more").addEventListener("click", () => loadQueue(true));
  $("#select-all").addEventListener("click", () => cards().forEach((c) => { c.querySelector(".select").checked = true; c.classList.add("selected"); }));
  for (const id of ["#f-camera", "#f-rule", "#f-pred"]) $(id).addEventListener("change", () => loadQueue(false));

  (async () => {
    try {
      await loadSummary();
      await loadQueue(false);
      document.body.dataset.ready = "1";
    } catch (e) { status("Cannot load the samples: " + e.message); }
  })();
})();
