(function () {
  "use strict";
  // Every text from the data goes into the page through textContent or attributes set by the DOM API,
  // never through innerHTML, so file names and labels cannot become markup.
  var started = performance.now();
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var rows = data.rows;
  var PAGE = data.page_size || 100;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        if (attrs[key] !== undefined && attrs[key] !== null) { node.setAttribute(key, attrs[key]); }
      });
    }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fmt(value, digits) {
    return value === undefined || value === null ? "" : Number(value).toFixed(digits === undefined ? 4 : digits);
  }
  function peakText(r) {
    if (r.pv === undefined && r.py === undefined) { return ""; }
    var where = r.py !== undefined ? " @ (" + (r.pz !== undefined ? r.pz + ", " : "") + r.py + ", " + r.px + ")" : "";
    return (r.pv !== undefined ? fmt(r.pv) : "") + where;
  }
  function isBad(r) { return r.s === "failed" || r.c === "fail" || r.c === "error"; }

  rows.forEach(function (r, i) {
    r._i = i;
    r.p = (data.prefix || "") + r.n;
    if (r.st && !r.ov && (r.v & 1)) { r.ov = r.st + ".overlay.png"; }
    if (r.st && (r.v & 2)) { r.hm = r.st + ".heatmap.png"; }
    r._q = [r.p, r.l, r.s, r.c, r.err].join(" ").toLowerCase();
  });

  var columns = [
    { key: "n", label: "image", type: "text", cls: "name" },
    { key: "s", label: "status", type: "text", when: data.has_run },
    { key: "c", label: "check", type: "text", when: data.has_check },
    { key: "l", label: "target", type: "text" },
    { key: "sc", label: "score", type: "num", show: function (r) { return fmt(r.sc); } },
    { key: "pv", label: data.has_volumes ? "peak @ (z, y, x)" : "peak @ (y, x)", type: "num", show: peakText, when: data.has_run },
    { key: "e", label: "energy share", type: "num", show: function (r) { return fmt(r.e, 3); }, when: data.has_check },
    { key: "sec", label: "seconds", type: "num", show: function (r) { return fmt(r.sec, 2); } },
    { key: "err", label: "error", type: "text", cls: "err" }
  ].filter(function (c) { return c.when === undefined || c.when; });

  var state = { filter: "", status: "", sortKey: null, sortDir: 1, page: 0, tab: "grid" };
  var view = rows.slice();

  function compare(a, b) {
    var key = state.sortKey;
    var x = a[key], y = b[key];
    var xm = x === undefined || x === null || x === "", ym = y === undefined || y === null || y === "";
    if (xm || ym) { return xm === ym ? a._i - b._i : (xm ? 1 : -1); }  // blanks last in both directions
    var order;
    if (typeof x === "number" && typeof y === "number") { order = x - y; } else {
      order = String(x).localeCompare(String(y), undefined, { numeric: true, sensitivity: "base" });
    }
    return order !== 0 ? order * state.sortDir : a._i - b._i;
  }

  function refresh() {
    var q = state.filter.trim().toLowerCase();
    var st = state.status;
    view = rows.filter(function (r) {
      if (q && r._q.indexOf(q) < 0) { return false; }
      if (st) {
        var parts = st.split(":");
        if ((parts[0] === "run" ? r.s : r.c) !== parts[1]) { return false; }
      }
      return true;
    });
    if (state.sortKey) { view.sort(compare); }
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    render();
  }

  function pageRows() { return view.slice(state.page * PAGE, (state.page + 1) * PAGE); }

  function render() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    var first = view.length ? state.page * PAGE + 1 : 0;
    var last = Math.min(view.length, (state.page + 1) * PAGE);
    document.getElementById("page-info").textContent =
      first + "\u2013" + last + " of " + view.length + (view.length !== rows.length ? " (of " + rows.length + ")" : "") +
      " \u00b7 page " + (state.page + 1) + "/" + pages;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    var slice = pageRows();
    if (state.tab === "grid") { renderGrid(slice); } else { renderTable(slice); }
  }

  function renderTable(slice) {
    var body = document.getElementById("table-body");
    var fragment = document.createDocumentFragment();
    slice.forEach(function (r) {
      var tr = el("tr", { "data-index": r._i, "class": isBad(r) ? "bad" : null });
      columns.forEach(function (c) {
        var td = el("td", { "class": c.type === "num" ? "num" : (c.cls || null) });
        if (c.key === "n") {
          var link = el("button", { "type": "button", "class": "linkish", "title": r.p }, r.n);
          link.addEventListener("click", function () { openViewer(r._i); });
          td.appendChild(link);
        } else {
          td.textContent = c.show ? c.show(r) : (r[c.key] === undefined ? "" : r[c.key]);
        }
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
  }

  function badge(status) { return el("span", { "class": "badge st-" + status }, status); }

  function renderGrid(slice) {
    var grid = document.getElementById("grid");
    var fragment = document.createDocumentFragment();
    slice.forEach(function (r) {
      var figure = el("figure", { "class": "thumb" + (isBad(r) ? " bad" : ""), "data-index": r._i });
      var button = el("button", { "type": "button", "aria-label": "open " + r.n });
      if (r.ov) {
        button.appendChild(el("img", { "src": r.ov, "alt": r.n, "loading": "lazy", "decoding": "async" }));
      } else {
        button.appendChild(el("span", { "class": "none" }, r.err || "no picture"));
      }
      button.addEventListener("click", function () { openViewer(r._i); });
      figure.appendChild(button);
      var caption = el("figcaption");
      caption.appendChild(el("span", { "class": "name", "title": r.p }, r.n));
      var meta = el("span", { "class": "meta" });
      if (r.s) { meta.appendChild(badge(r.s)); }
      if (r.c) { meta.appendChild(badge(r.c)); }
      if (r.l) { meta.appendChild(el("span", null, r.l)); }
      if (r.sc !== undefined) { meta.appendChild(el("span", null, fmt(r.sc))); }
      caption.appendChild(meta);
      figure.appendChild(caption);
      fragment.appendChild(figure);
    });
    grid.replaceChildren(fragment);
  }

  // ------------------------------------------------------------------ enlarged view
  var viewer = document.getElementById("viewer");
  var current = null;

  function panel(src, caption, pixelated) {
    var figure = el("figure");
    var img = el("img", { "src": src, "alt": caption, "class": pixelated ? "pixelated" : null });
    img.addEventListener("error", function () { figure.remove(); });  // e.g. the original left behind in a zip
    figure.appendChild(img);
    figure.appendChild(el("figcaption", null, caption));
    return figure;
  }

  function openViewer(index) {
    var r = rows[index];
    current = index;
    document.getElementById("viewer-title").textContent = r.n;
    var panels = document.getElementById("viewer-panels");
    panels.replaceChildren();
    if (r.o) { panels.appendChild(panel(r.o, "original", true)); }
    if (r.hm) { panels.appendChild(panel(r.hm, "heatmap", false)); }
    if (r.ov) { panels.appendChild(panel(r.ov, "overlay", false)); }
    var details = document.getElementById("viewer-details");
    details.replaceChildren();
    [
      ["path", r.p], ["status", r.s], ["check", r.c], ["target", r.l], ["score", fmt(r.sc)], ["peak", peakText(r)],
      ["energy share", fmt(r.e, 3)], ["peak in region", r.pg === undefined ? "" : (r.pg ? "yes" : "no")],
      ["region share", fmt(r.rf, 3)], ["mask", r.m], ["regions", r.rg], ["seconds", fmt(r.sec, 2)], ["error", r.err]
    ].forEach(function (pair) {
      if (pair[1] === undefined || pair[1] === "") { return; }
      details.appendChild(el("dt", null, pair[0]));
      details.appendChild(el("dd", null, pair[1]));
    });
    if (!viewer.open) { viewer.showModal(); }
  }

  function step(delta) {
    if (current === null) { return; }
    var position = view.findIndex(function (r) { return r._i === current; });
    var next = view[position + delta];
    if (next) { openViewer(next._i); }
  }

  document.getElementById("viewer-close").addEventListener("click", function () { viewer.close(); });
  document.getElementById("viewer-prev").addEventListener("click", function () { step(-1); });
  document.getElementById("viewer-next").addEventListener("click", function () { step(1); });
  viewer.addEventListener("click", function (event) { if (event.target === viewer) { viewer.close(); } });
  viewer.addEventListener("keydown", function (event) {
    if (event.key === "ArrowLeft") { step(-1); }
    if (event.key === "ArrowRight") { step(1); }
  });

  // ------------------------------------------------------------------ controls
  function setupControls() {
    var head = document.getElementById("table-head");
    columns.forEach(function (c) {
      var th = el("th", { "data-key": c.key, "scope": "col", "tabindex": "0", "aria-sort": "none" }, c.label);
      function sort() {
        if (state.sortKey === c.key) { state.sortDir = -state.sortDir; } else { state.sortKey = c.key; state.sortDir = 1; }
        head.querySelectorAll("th").forEach(function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", state.sortDir === 1 ? "ascending" : "descending");
        state.page = 0;
        refresh();
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (event) { if (event.key === "Enter") { sort(); } });
      head.appendChild(th);
    });
    var select = document.getElementById("status-filter");
    var seen = {};
    rows.forEach(function (r) {
      if (r.s) { seen["run:" + r.s] = true; }
      if (r.c) { seen["check:" + r.c] = true; }
    });
    Object.keys(seen).sort().forEach(function (value) {
      select.appendChild(el("option", { "value": value }, value.replace(":", ": ")));
    });
    select.addEventListener("change", function () { state.status = select.value; state.page = 0; refresh(); });
    var filter = document.getElementById("filter");
    var timer = null;
    filter.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.filter = filter.value; state.page = 0; refresh(); }, 120);
    });
    document.getElementById("prev").addEventListener("click", function () { state.page -= 1; render(); });
    document.getElementById("next").addEventListener("click", function () { state.page += 1; render(); });
    ["grid", "table"].forEach(function (tab) {
      document.getElementById("tab-" + tab).addEventListener("click", function () {
        state.tab = tab;
        document.getElementById("tab-grid").setAttribute("aria-selected", String(tab === "grid"));
        document.getElementById("tab-table").setAttribute("aria-selected", String(tab === "table"));
        document.getElementById("grid").hidden = tab !== "grid";
        document.getElementById("table-view").hidden = tab !== "table";
        // one view in the DOM at a time: the hidden one is emptied
        (tab === "grid" ? document.getElementById("table-body") : document.getElementById("grid")).replaceChildren();
        render();
      });
    });
  }

  function renderCompare() {
    var table = document.getElementById("compare-table");
    if (!table) { return; }
    var body = table.querySelector("tbody");
    data.compare.forEach(function (c) {
      var tr = el("tr");
      [c.n, c.l, c.other, fmt(c.pearson, 3), fmt(c.spearman, 3), fmt(c.iou, 3),
        fmt(c.del[0], 3) + " / " + fmt(c.del[1], 3), fmt(c.ins[0], 3) + " / " + fmt(c.ins[1], 3),
        c.better[0] + " / " + c.better[1]].forEach(function (text, i) {
        tr.appendChild(el("td", { "class": i >= 3 ? "num" : null }, text));
      });
      var td = el("td");
      if (c.png) {
        var link = el("a", { "href": c.png }, "compare.png");
        td.appendChild(link);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    });
  }

  function renderDiff() {
    var table = document.getElementById("diff-table");
    if (!table) { return; }
    var body = table.querySelector("tbody");
    data.diff.forEach(function (d) {
      var tr = el("tr", { "class": d.gates === "pass" ? null : "bad" });
      [d.n, d.l, d.a, d.b].concat(d.nums.map(function (v) { return fmt(v, 3); })).concat([d.gates])
        .forEach(function (text, i) {
          var cls = i >= 4 && i < 8 ? "num" : (i === 3 && d.flip ? "flip" : null);
          tr.appendChild(el("td", { "class": cls }, text));
        });
      var td = el("td");
      if (d.png) {
        var link = el("a", { "href": d.png });
        link.appendChild(el("img", { "src": d.png, "alt": "A | B | B - A", "loading": "lazy", "class": "diff-thumb" }));
        td.appendChild(link);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    });
  }

  if (rows.length) { setupControls(); refresh(); }
  renderCompare();
  renderDiff();
  window.occludeReport = { rows: rows.length, renderMs: performance.now() - started };
  document.documentElement.setAttribute("data-ready", "true");
})();
