"use strict";
(function () {
  // Data from the scan are written into the page with textContent only.
  var data = JSON.parse(document.getElementById("page-data").textContent);
  var rows = data.rows; // [id, class, score, detectors, reason, source file, source row]
  var PAGE = 100;
  var decisions = {};
  var store = null;
  try { store = window.localStorage; } catch (e) { store = null; }
  // decisions already applied to this scan (poisonscan apply), then this browser's own
  Object.keys(data.applied || {}).forEach(function (id) { decisions[id] = data.applied[id]; });
  if (store) {
    var kept = {};
    try { kept = JSON.parse(store.getItem(data.storage_key) || "{}") || {}; } catch (e) { kept = {}; }
    Object.keys(kept).forEach(function (id) { decisions[id] = kept[id]; });
  }
  var state = { key: 2, dir: -1, page: 0, text: "", cls: "", det: "", dec: "" };
  var reviewer = "";
  if (store) { try { reviewer = store.getItem("poisonscan-reviewer") || ""; } catch (e) { reviewer = ""; } }

  function save() {
    if (!store) return;
    try { store.setItem(data.storage_key, JSON.stringify(decisions)); } catch (e) { /* storage full or denied */ }
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  // a decision: {d: confirmed | released | pending, r: reviewer, t: ISO time, n: note}
  // (a plain string in pages of earlier versions)
  function entry(id) {
    var v = decisions[id];
    if (!v) return { d: "pending", r: "", t: "", n: "" };
    return typeof v === "string" ? { d: v, r: "", t: "", n: "" } : v;
  }
  function decisionOf(id) { return entry(id).d || "pending"; }

  function decide(id, value) {
    var e = entry(id);
    e.d = value; e.r = reviewer; e.t = new Date().toISOString();
    if (e.d === "pending" && !e.n) { delete decisions[id]; } else { decisions[id] = e; }
  }
  function setDecision(id, value) {
    decide(id, decisionOf(id) === value ? "pending" : value);
    save();
    syncCards();
    render();
  }
  function setNote(id, text) {
    var e = entry(id);
    e.n = text;
    if (e.d === "pending" && !e.n) { delete decisions[id]; } else { decisions[id] = e; }
    save();
  }

  function syncCards() {
    var cards = document.querySelectorAll("article.card.flagged");
    for (var i = 0; i < cards.length; i++) {
      var d = decisionOf(cards[i].dataset.id);
      cards[i].classList.toggle("confirmed", d === "confirmed");
      cards[i].classList.toggle("released", d === "released");
      var bs = cards[i].querySelectorAll("button");
      for (var j = 0; j < bs.length; j++) {
        bs[j].classList.toggle("on", (bs[j].classList.contains("confirm") && d === "confirmed") || (bs[j].classList.contains("release") && d === "released"));
      }
    }
  }

  function matches(r) {
    if (state.cls && r[1] !== state.cls) return false;
    if (state.det && r[3].indexOf(state.det) < 0) return false;
    if (state.dec && decisionOf(r[0]) !== state.dec) return false;
    if (state.text) {
      var t = state.text;
      if ((r[0] + " " + r[4] + " " + r[5]).toLowerCase().indexOf(t) < 0) return false;
    }
    return true;
  }

  function sorted(list) {
    var k = state.key, dir = state.dir;
    return list.slice().sort(function (a, b) {
      var x = a[k], y = b[k];
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      if (typeof x === "number" && typeof y === "number") return dir * (x - y);
      return dir * String(x).localeCompare(String(y), undefined, { numeric: true });
    });
  }

  var shown = [];
  function render() {
    shown = sorted(rows.filter(matches));
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    var body = document.querySelector("#flagged-table tbody");
    var frag = document.createDocumentFragment();
    shown.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.id = r[0];
      tr.appendChild(el("td", r[2] === null ? "" : r[2].toFixed(2), "r"));
      tr.appendChild(el("td", r[0]));
      tr.appendChild(el("td", r[1]));
      tr.appendChild(el("td", r[3].join(", ")));
      tr.appendChild(el("td", r[4], "reason"));
      tr.appendChild(el("td", r[5].split("/").pop() + " row " + r[6]));
      var td = document.createElement("td");
      var d = decisionOf(r[0]);
      ["confirm", "release"].forEach(function (what) {
        var b = el("button", what, what);
        b.type = "button";
        if ((what === "confirm" && d === "confirmed") || (what === "release" && d === "released")) b.classList.add("on");
        b.addEventListener("click", function () { setDecision(r[0], what === "confirm" ? "confirmed" : "released"); });
        td.appendChild(b);
      });
      var note = document.createElement("input");
      note.type = "text";
      note.className = "decision-note";
      note.placeholder = "note";
      note.setAttribute("aria-label", "note");
      note.value = entry(r[0]).n || "";
      note.addEventListener("change", function (e) { setNote(r[0], e.target.value); });
      td.appendChild(note);
      tr.appendChild(td);
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    document.getElementById("page").textContent =
      "page " + (state.page + 1) + " of " + pages + " (" + shown.length + " rows)";
    var c = { confirmed: 0, released: 0 };
    rows.forEach(function (r) { var d = decisionOf(r[0]); if (c[d] !== undefined) c[d]++; });
    document.getElementById("tally").textContent =
      c.confirmed + " confirmed, " + c.released + " released, " + (rows.length - c.confirmed - c.released) + " pending" +
      (data.rows_total > rows.length ? " (of the " + rows.length + " rows listed)" : "") +
      "; " + (c.confirmed + c.released) + " of " + rows.length + " decided";
    var ths = document.querySelectorAll("#flagged-table th.sortable");
    for (var i = 0; i < ths.length; i++) {
      var on = Number(ths[i].dataset.key) === state.key;
      ths[i].classList.toggle("asc", on && state.dir > 0);
      ths[i].classList.toggle("desc", on && state.dir < 0);
    }
  }

  function fillSelect(id, values) {
    var sel = document.getElementById(id);
    values.forEach(function (v) { var o = el("option", v); o.value = v; sel.appendChild(o); });
  }
  function unique(list) { return Object.keys(list.reduce(function (m, v) { m[v] = 1; return m; }, {})).sort(function (a, b) { return a.localeCompare(b, undefined, { numeric: true }); }); }

  function csvField(v) {
    var s = v === null || v === undefined ? "" : String(v);
    // a formula to a spreadsheet: shown as text; a leading ' doubled, so '=1 and =1 differ
    if (typeof v === "string" && /^[=+\-@\t\r']/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function download() {
    var lines = [[data.id_column, "label", "score", "decision", "reviewer", "time", "note", "scan"].map(csvField).join(",")];
    rows.forEach(function (r) {
      var e = entry(r[0]);
      lines.push([r[0], r[1], r[2], e.d || "pending", e.r || "", e.t || "", e.n || "", data.scan].map(csvField).join(","));
    });
    var blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "poisonscan-decisions.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  }

  fillSelect("class-filter", unique(rows.map(function (r) { return r[1]; })));
  fillSelect("detector-filter", unique([].concat.apply([], rows.map(function (r) { return r[3]; }))));
  document.getElementById("filter").addEventListener("input", function (e) { state.text = e.target.value.trim().toLowerCase(); state.page = 0; render(); });
  document.getElementById("class-filter").addEventListener("change", function (e) { state.cls = e.target.value; state.page = 0; render(); });
  document.getElementById("detector-filter").addEventListener("change", function (e) { state.det = e.target.value; state.page = 0; render(); });
  document.getElementById("decision-filter").addEventListener("change", function (e) { state.dec = e.target.value; state.page = 0; render(); });
  document.getElementById("prev").addEventListener("click", function () { if (state.page > 0) { state.page--; render(); } });
  document.getElementById("next").addEventListener("click", function () { state.page++; render(); });
  document.getElementById("download").addEventListener("click", download);
  function markShown(value) {
    shown.forEach(function (r) { decide(r[0], value); });
    save(); syncCards(); render();
  }
  var who = document.getElementById("reviewer");
  who.value = reviewer;
  who.addEventListener("change", function (e) {
    reviewer = e.target.value.trim();
    if (store) { try { store.setItem("poisonscan-reviewer", reviewer); } catch (err) { /* storage denied */ } }
  });
  document.getElementById("confirm-shown").addEventListener("click", function () { markShown("confirmed"); });
  document.getElementById("release-shown").addEventListener("click", function () { markShown("released"); });
  var ths = document.querySelectorAll("#flagged-table th.sortable");
  for (var i = 0; i < ths.length; i++) {
    ths[i].addEventListener("click", function (e) {
      var k = Number(e.currentTarget.dataset.key);
      state.dir = state.key === k ? -state.dir : (k === 2 ? -1 : 1);
      state.key = k;
      render();
    });
  }
  var buttons = document.querySelectorAll("article.card.flagged .decide button");
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", function (e) {
      var t = e.currentTarget;
      setDecision(t.dataset.id, t.classList.contains("confirm") ? "confirmed" : "released");
    });
  }
  syncCards();
  render();
  document.body.dataset.ready = "1";
})();
