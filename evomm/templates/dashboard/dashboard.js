/* evomm dashboard (evomm serve and report.html): every chart is Plotly; the data come from the
 * JSON API (docs/dashboard.md), or, in report.html, from the same answers embedded in the page
 * (<script id="evomm-data">). Live pages poll the API every POLL_MS and redraw what changed. */
(function () {
  "use strict";
  const POLL_MS = 2000;
  const MAX_FRONT_LABELS = 60;
  const GL_FROM = 1500;
  const EMBED = document.getElementById("evomm-data");
  const STATIC = EMBED ? JSON.parse(EMBED.textContent) : null;
  const PLOT_CFG = { displaylogo: false, responsive: true };
  const S = { run: null, stage: "", records: [], next: 0, front: null, progress: null, selected: null,
              view: "scatter", x: null, y: null, exportJob: null };
  window.evommDashboard = S; // for tests and the curious: the page's state

  // ---- data --------------------------------------------------------------------------------
  async function api(path, staticKey) {
    if (STATIC) {
      const key = staticKey || path;
      if (!(key in STATIC)) throw new Error("not embedded in this report: " + key);
      return STATIC[key];
    }
    const r = await fetch(path.slice(1), { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const fmt = (v) => (v === null || v === undefined ? "–" : typeof v === "number" ? (Math.abs(v) >= 1000 ? v.toFixed(0) : +v.toPrecision(4)) : String(v));
  const short = (id) => (id.startsWith("parent:") ? id.slice(7) : id);
  const objectives = () => S.run.objectives;
  const isParent = (r) => r.id.startsWith("parent:");
  const value = (r, k) => (k === "generation" ? r.generation : r.objectives[k]);
  const hasAll = (r) => objectives().every((o) => typeof r.objectives[o.name] === "number");

  // ---- header and menus ----------------------------------------------------------------------
  function drawHeader() {
    const run = S.run;
    document.title = "evomm run " + run.name;
    $("title").textContent = "evomm run: " + run.name + (run.recipe && run.recipe !== run.name ? " (recipe " + run.recipe + ")" : "");
    const st = $("status");
    st.textContent = STATIC ? run.status + " (report)" : run.status;
    st.className = "pill " + run.status;
    const nFront = S.front ? S.front.front.length : 0;
    let counts = run.records + " records · " + nFront + " on the front · objectives " +
      objectives().map((o) => o.name + " (" + (o.direction === "maximize" ? "max" : "min") + ")").join(", ");
    if (run.executor) counts += " · executor " + run.executor.name + " × " + run.executor.workers;
    if (run.arrival_per_minute) counts += " · " + fmt(run.arrival_per_minute) + " candidates/min now";
    $("counts").textContent = counts;
    drawWorkers();
    const warn = [];
    if (run.skipped_count) warn.push(run.skipped_count + " archive line(s) skipped (not records): line " +
      run.skipped.map((s) => s.line).join(", "));
    if (run.pending_bytes) warn.push("a last line is being written (" + run.pending_bytes + " bytes)");
    $("warn").textContent = warn.join(" · ");
  }

  function fillSelect(sel, options, chosen) {
    const keep = chosen !== undefined && options.some((o) => o[0] === chosen) ? chosen : options.length ? options[0][0] : "";
    sel.innerHTML = options.map((o) => '<option value="' + esc(o[0]) + '">' + esc(o[1]) + "</option>").join("");
    sel.value = keep;
    return keep;
  }

  function drawMenus() {
    const names = objectives().map((o) => o.name);
    const views = [["scatter", "scatter (two objectives)"]];
    if (names.length >= 3) views.push(["pairs", "pair plot"], ["parcoords", "parallel coordinates"]);
    S.view = fillSelect($("view"), views, S.view);
    const axes = [...names.map((n) => [n, n]), ["generation", "generation"]];
    // one objective: its value by generation
    S.x = fillSelect($("xobj"), axes, S.x || (names.length > 1 ? names[0] : "generation"));
    S.y = fillSelect($("yobj"), axes, S.y || (names.length > 1 ? names[1] : names[0]));
    const stages = S.run.stages.length ? S.run.stages : [S.run.stage];
    S.stage = fillSelect($("stage"), stages.map((s) => [s, s]), S.stage || S.run.stage);
    const two = S.view === "scatter";
    $("x-label").style.display = two ? "" : "none";
    $("y-label").style.display = two ? "" : "none";
  }

  // ---- the front -----------------------------------------------------------------------------
  /* "value ± standard error" when the record was scored on part of the items (racing, estimates). */
  function withError(r, name) {
    const se = r.details && r.details.stderr && typeof r.details.stderr === "object" ? r.details.stderr[name] : undefined;
    return fmt(r.objectives[name]) + (typeof se === "number" ? " ± " + fmt(se) : "");
  }

  function hover(r) {
    const d = r.details ? Object.entries(r.details).filter(([k]) => k !== "stderr")
      .map(([k, v]) => k + " " + (typeof v === "object" ? JSON.stringify(v) : fmt(v))).join(", ") : "";
    let t = "<b>" + esc(r.id) + "</b> · gen " + r.generation + " · " + esc(r.evaluation) + (d ? " (" + esc(d) + ")" : "");
    for (const o of objectives()) t += "<br>" + esc(o.name) + " = " + withError(r, o.name);
    const res = S.front && S.front.rescores ? S.front.rescores : {};
    for (const [split, scores] of Object.entries(res)) {
      if (scores[r.id]) t += "<br><i>held-out " + esc(split) + "</i>: " +
        Object.entries(scores[r.id]).map(([k, v]) => esc(k) + " " + fmt(v)).join(", ");
    }
    return t;
  }

  function stageRecords() {
    return S.records.filter((r) => r.stage === S.stage && !isParent(r) && hasAll(r) && r.evaluation !== "failed");
  }

  function frontTraces(x, y) {
    const recs = stageRecords();
    const front = S.front.front, parents = S.front.parents;
    const byEval = {};
    for (const r of recs) (byEval[r.evaluation] = byEval[r.evaluation] || []).push(r);
    const symbols = { full: "circle", subset: "x", raced: "diamond", estimated: "triangle-up" };
    // WebGL for a large cloud (SVG slows down past a few thousand markers); the marked points stay SVG, on top
    const cloud = recs.length > GL_FROM ? "scattergl" : "scatter";
    const traces = Object.entries(byEval).map(([ev, rs]) => ({
      type: cloud, mode: "markers", name: ev === "full" ? "candidates" : ev + " evaluation",
      x: rs.map((r) => value(r, x)), y: rs.map((r) => value(r, y)), customdata: rs.map((r) => r.id),
      text: rs.map(hover), hovertemplate: "%{text}<extra></extra>",
      marker: { size: 7, opacity: 0.8, symbol: symbols[ev] || "square", color: rs.map((r) => r.generation),
                coloraxis: "coloraxis", line: { width: 0 } } }));
    const mark = (rs, name, marker) => ({ type: "scatter", mode: "markers", name, x: rs.map((r) => value(r, x)),
      y: rs.map((r) => value(r, y)), customdata: rs.map((r) => r.id), text: rs.map(hover),
      hovertemplate: "%{text}<extra></extra>", marker });
    traces.push(mark(front, "Pareto front", { size: 13, symbol: "circle-open", color: "#111", line: { width: 2 } }));
    traces.push(mark(parents, "parents", { size: 18, symbol: "star", color: "#d62728", line: { width: 1, color: "#000" } }));
    const knee = front.find((r) => r.id === S.front.knee);
    if (knee) traces.push(mark([knee], "knee", { size: 26, symbol: "circle-open", color: "#2ca02c", line: { width: 3 } }));
    const sel = S.selected && [...front, ...parents, ...recs].find((r) => r.id === S.selected);
    if (sel) traces.push(mark([sel], "selected", { size: 30, symbol: "square-open", color: "#ff7f0e", line: { width: 3 } }));
    return traces;
  }

  function range(vals) {
    const v = vals.filter((a) => typeof a === "number" && isFinite(a));
    if (!v.length) return [0, 1];
    let lo = Math.min(...v), hi = Math.max(...v);
    const pad = (hi - lo || Math.abs(hi) || 1) * 0.08;
    return [lo - pad, hi + pad];
  }

  /* The points of a front that no other beats on both shown objectives (with 3 or more
   * objectives most of the front hides behind others in a 2-D view: those are not labelled). */
  function projectedFront(recs, x, y) {
    const sign = (k) => { const o = objectives().find((o) => o.name === k); return o ? (o.direction === "maximize" ? 1 : -1) : 0; };
    const sx = sign(x), sy = sign(y);
    if (!sx || !sy) return [...recs];
    const sorted = [...recs].sort((a, b) => sx * (value(b, x) - value(a, x)) || sy * (value(b, y) - value(a, y)));
    const out = [];
    let best = -Infinity;
    for (const r of sorted) if (sy * value(r, y) > best) { out.push(r); best = sy * value(r, y); }
    return out;
  }

  /* Labels of the parents, the knee and the front, placed without overlap. Plotly draws
   * annotations where it is told and has no collision avoidance, so each label tries offsets
   * around its point (nearest first) and takes the first whose box stays inside the plot and
   * clear of the labels and marked points placed so far; a front label that fits nowhere is
   * left out (its point keeps its hover text). */
  function placeLabels(gd, x, y, xr, yr) {
    const W = gd.clientWidth - 70 - 120, H = gd.clientHeight - 40 - 55;
    const px = (r) => [((value(r, x) - xr[0]) / (xr[1] - xr[0])) * W, (1 - (value(r, y) - yr[0]) / (yr[1] - yr[0])) * H];
    const items = [];
    for (const r of S.front.parents) items.push({ r, text: short(r.id), color: "#d62728", must: true });
    const byX = projectedFront(S.front.front, x, y).sort((a, b) => value(a, x) - value(b, x));
    const step = Math.max(1, byX.length / MAX_FRONT_LABELS);  // a large front: try evenly spaced ones
    const tried = byX.filter((r, i) => r.id === S.front.knee || Math.floor(i % step) === 0);
    const kneeRec = S.front.front.find((r) => r.id === S.front.knee);
    if (kneeRec && !tried.includes(kneeRec)) tried.push(kneeRec);
    for (const r of tried) {
      const knee = r.id === S.front.knee;
      items.push({ r, text: knee ? "knee " + r.id : r.id, color: knee ? "#2ca02c" : "#444", must: knee });
    }
    items.sort((a, b) => (b.must - a.must));
    const boxes = items.map((it) => { const [cx, cy] = px(it.r); return [cx - 7, cy - 7, cx + 7, cy + 7]; });
    const overlaps = (b) => boxes.some((o) => b[0] < o[2] && b[2] > o[0] && b[1] < o[3] && b[3] > o[1]);
    const anns = [];
    let left = 0;
    for (const it of items) {
      const [cx, cy] = px(it.r);
      const w = it.text.length * 6.6 + 8, h = 16;
      let chosen = null, last = null;
      for (const rad of [26, 44, 66, 90]) {
        for (let k = 0; k < 12 && !chosen; k++) {
          const ang = (k * Math.PI) / 6 - Math.PI / 4;
          const ax = Math.cos(ang) * rad, ay = -Math.sin(ang) * rad;
          const b = [cx + ax - w / 2, cy + ay - h / 2, cx + ax + w / 2, cy + ay + h / 2];
          last = [ax, ay, b];
          if (b[0] < 0 || b[1] < 0 || b[2] > W || b[3] > H || overlaps(b)) continue;
          chosen = last;
        }
        if (chosen) break;
      }
      if (!chosen && !it.must) { left++; continue; }
      chosen = chosen || last;
      boxes.push(chosen[2]);
      anns.push({ x: value(it.r, x), y: value(it.r, y), ax: chosen[0], ay: chosen[1], text: esc(it.text),
                  showarrow: true, arrowhead: 0, arrowwidth: 1, arrowcolor: it.color,
                  font: { size: 11, color: it.color }, bgcolor: "rgba(255,255,255,0.85)" });
    }
    return { anns, left };
  }

  function drawScatter(gd) {
    const x = S.x, y = S.y;
    const all = [...stageRecords(), ...S.front.parents];
    const xr = range(all.map((r) => value(r, x))), yr = range(all.map((r) => value(r, y)));
    const dir = (k) => { const o = objectives().find((o) => o.name === k); return o ? " (" + (o.direction === "maximize" ? "higher is better" : "lower is better") + ")" : ""; };
    const layout = {
      margin: { l: 70, r: 120, t: 40, b: 55 }, hovermode: "closest", uirevision: S.stage + x + y,
      xaxis: { title: { text: x + dir(x) }, range: xr, zeroline: false },
      yaxis: { title: { text: y + dir(y) }, range: yr, zeroline: false },
      coloraxis: { colorscale: "Viridis", colorbar: { title: { text: "generation" }, thickness: 12 } },
      legend: { orientation: "h", y: 1.08, x: 0 },
    };
    const { anns, left } = placeLabels(gd, x, y, xr, yr);
    layout.annotations = anns;
    $("front-note").textContent = "labelled: parents, the knee and the front's points unbeaten on these two axes" +
      (left ? " (" + left + " hidden to avoid overlap)" : "") + "; hover any point";
    return Plotly.react(gd, frontTraces(x, y), layout, PLOT_CFG);
  }

  function drawPairs(gd) {
    const names = objectives().map((o) => o.name);
    const dims = (rs) => names.map((n) => ({ label: n, values: rs.map((r) => r.objectives[n]) }));
    const sp = (rs, name, marker) => ({ type: "splom", name, dimensions: dims(rs), customdata: rs.map((r) => r.id),
      text: rs.map(hover), hovertemplate: "%{text}<extra></extra>", diagonal: { visible: false }, showupperhalf: false, marker });
    const recs = stageRecords();
    const traces = [sp(recs, "candidates", { size: 5, color: recs.map((r) => r.generation), coloraxis: "coloraxis" }),
      sp(S.front.front, "Pareto front", { size: 10, symbol: "circle-open", color: "#111", line: { width: 2 } }),
      sp(S.front.parents, "parents", { size: 14, symbol: "star", color: "#d62728" })];
    const knee = S.front.front.filter((r) => r.id === S.front.knee);
    if (knee.length) traces.push(sp(knee, "knee", { size: 20, symbol: "circle-open", color: "#2ca02c", line: { width: 3 } }));
    $("front-note").textContent = "labels: in the scatter view; hover for ids";
    return Plotly.react(gd, traces, { margin: { l: 60, r: 110, t: 40, b: 50 }, hovermode: "closest", dragmode: "select",
      coloraxis: { colorscale: "Viridis", colorbar: { title: { text: "generation" }, thickness: 12 } },
      legend: { orientation: "h", y: 1.08 } }, PLOT_CFG);
  }

  function drawParcoords(gd) {
    const recs = stageRecords();
    const onFront = new Set(S.front.front.map((r) => r.id));
    const dims = objectives().map((o) => ({ label: o.name + (o.direction === "maximize" ? " ↑" : " ↓"), values: recs.map((r) => r.objectives[o.name]) }));
    dims.push({ label: "on the front", values: recs.map((r) => (onFront.has(r.id) ? 1 : 0)), tickvals: [0, 1], ticktext: ["no", "yes"] });
    $("front-note").textContent = "drag along an axis to filter; colour: generation";
    return Plotly.react(gd, [{ type: "parcoords", dimensions: dims,
      line: { color: recs.map((r) => r.generation), colorscale: "Viridis", showscale: true, colorbar: { title: { text: "generation" } } } }],
    { margin: { l: 70, r: 90, t: 50, b: 30 } }, PLOT_CFG);
  }

  async function drawFront() {
    const gd = $("front-plot");
    if (!S.front) return;
    if (S.view === "pairs") await drawPairs(gd);
    else if (S.view === "parcoords") await drawParcoords(gd);
    else await drawScatter(gd);
    if (!gd._evommBound) {
      gd._evommBound = true;
      gd.on("plotly_click", (ev) => { const p = ev.points && ev.points[0]; if (p && p.customdata) select(p.customdata); });
    }
  }

  // ---- a candidate ---------------------------------------------------------------------------
  /* Gene names are GROUP.SLOT with GROUP = param or param[parent] (evomm.genome): one heat map per
   * param, a row per parent, a column per layer slot in depth order. */
  function geneTables(genes) {
    const tables = {};
    for (const [name, v] of Object.entries(genes)) {
      const m = /^([^.[]+)(?:\[([^\]]*)\])?(?:\.(.+))?$/.exec(name) || [name, name, undefined, undefined];
      const param = m[1], row = m[2] === undefined ? "(all)" : m[2], col = m[3] === undefined ? "(all)" : m[3];
      const t = (tables[param] = tables[param] || { rows: [], cols: [], cells: {} });
      if (!t.rows.includes(row)) t.rows.push(row);
      if (!t.cols.includes(col)) t.cols.push(col);
      t.cells[row + "\u0000" + col] = v;
    }
    const depth = (c) => { const n = /(\d+)/.exec(c); return n ? +n[1] : Infinity; };
    for (const t of Object.values(tables)) t.cols.sort((a, b) => depth(a) - depth(b));
    // genes with no parent and no layer (one cell each) share one row instead of a map each
    const single = Object.entries(tables).filter(([, t]) => t.rows.length === 1 && t.cols.length === 1);
    if (single.length > 1) {
      const t = { rows: ["value"], cols: [], cells: {} };
      for (const [param, s] of single) {
        delete tables[param];
        t.cols.push(param);
        t.cells["value\u0000" + param] = s.cells[s.rows[0] + "\u0000" + s.cols[0]];
      }
      tables["genes"] = t;
    }
    return tables;
  }

  function drawGenes(rec) {
    const box = $("genes-plot");
    Plotly.purge && [...box.children].forEach((c) => Plotly.purge(c));
    box.innerHTML = "";
    const tables = geneTables(rec.genes || {});
    if (!Object.keys(tables).length) { box.innerHTML = '<p class="note">No genes (a parent, or a record without them).</p>'; return; }
    for (const [param, t] of Object.entries(tables)) {
      const div = document.createElement("div");
      div.className = "genes-heatmap";
      div.dataset.param = param;
      div.style.height = Math.max(165, 75 + 34 * t.rows.length) + "px";
      box.appendChild(div);
      const z = t.rows.map((r) => t.cols.map((c) => { const v = t.cells[r + "\u0000" + c]; return v === undefined ? null : v; }));
      const layered = t.cols.some((c) => c.startsWith("layers."));
      Plotly.newPlot(div, [{ type: "heatmap", z, x: t.cols.map((c) => c.replace(/^layers\./, "")), y: t.rows, colorscale: "RdBu", reversescale: true,
        texttemplate: t.cols.length <= 40 ? "%{z:.2f}" : "", hovertemplate: param + "[%{y}] %{x} = %{z:.4f}<extra></extra>",
        colorbar: { thickness: 10 } }],
      { title: { text: param === "genes" && t.rows[0] === "value" ? "genes" : "gene " + esc(param) + " by layer" +
          (t.rows.length > 1 || t.rows[0] !== "(all)" ? " (rows: parents)" : ""), font: { size: 13 } },
        margin: { l: 90, r: 30, t: 30, b: 52 }, xaxis: { type: "category", title: { text: layered ? "layer" : "" } }, yaxis: { type: "category", autorange: "reversed" } },
      { displaylogo: false, responsive: true, staticPlot: false });
    }
  }

  function objectiveTable(d) {
    const parents = S.front.parents;
    const rec = d.record, cols = [[rec.id, rec.objectives], ...parents.map((p) => [short(p.id) + " (parent)", p.objectives])];
    for (const [split, vals] of Object.entries(d.rescores || {})) cols.push([rec.id + " held-out " + split, vals]);
    let h = "<table><tr><th>objective</th>" + cols.map((c) => "<th>" + esc(c[0]) + "</th>").join("") + "</tr>";
    for (const o of objectives()) {
      const vals = cols.slice(0, 1 + parents.length).map((c) => c[1][o.name]).filter((v) => typeof v === "number");
      const best = vals.length ? (o.direction === "maximize" ? Math.max(...vals) : Math.min(...vals)) : null;
      h += "<tr><td>" + esc(o.name) + (o.direction === "maximize" ? " ↑" : " ↓") + "</td>" +
        cols.map((c, i) => '<td class="' + (i <= parents.length && c[1][o.name] === best ? "best" : "") + '">' +
          (i === 0 ? withError({ objectives: rec.objectives, details: { stderr: rec.stderr } }, o.name) : fmt(c[1][o.name])) + "</td>").join("") + "</tr>";
    }
    return h + "</table>";
  }

  function metricsTable(rec) {
    let h = "<table><tr><th>task</th><th>metric</th><th>value</th></tr>";
    for (const [task, ms] of Object.entries(rec.metrics || {})) for (const [m, v] of Object.entries(ms || {}))
      h += "<tr><td>" + esc(task) + "</td><td>" + esc(m) + "</td><td>" + fmt(v) + "</td></tr>";
    h += "</table><table><tr><th>phase</th><th>seconds</th></tr>";
    for (const [k, v] of Object.entries(rec.timings || {})) h += "<tr><td>" + esc(k) + "</td><td>" + fmt(v) + "</td></tr>";
    return h + "</table>";
  }

  async function select(id, redraw = true) {
    S.selected = id;
    writeHash();
    let d;
    try {
      d = await api("/api/candidate/" + encodeURIComponent(id), "/api/candidate/" + id);
    } catch (e) { $("cand-info").textContent = String(e.message || e); return; }
    const rec = d.record;
    const onFront = S.front.front.some((r) => r.id === id);
    const role = isParent(rec) ? "parent" : rec.id === S.front.knee ? "knee of the front" : onFront ? "on the front" : "not on the front";
    $("cand-title").textContent = "Candidate " + rec.id;
    const extra = Object.entries(rec.extra || {}).filter(([k, v]) => typeof v !== "object").map(([k, v]) => k + "=" + fmt(v)).join(", ");
    // lineage: the children picked from the stages before this one (multi-stage runs)
    const before = (S.run.previous || []).slice(0, Math.max(0, S.run.stages.indexOf(rec.stage)));
    const lineage = before.map((p) => esc(p.name) + " (" + esc(p.kind) + ") → " + esc(p.candidate)).join(" ⇒ ");
    $("cand-info").innerHTML = (lineage ? "lineage: " + lineage + " ⇒ " : "") + "stage <b>" + esc(rec.stage) + "</b> · generation " + rec.generation + " · evaluation <b>" +
      esc(rec.evaluation) + "</b> · " + role + (extra ? '<br><span class="note">' + esc(extra) + "</span>" : "") +
      (rec.plan_hash ? '<br><span class="note">plan ' + esc(String(rec.plan_hash).slice(0, 16)) + "</span>" : "");
    $("cand-objectives").innerHTML = objectiveTable(d);
    $("cand-metrics").innerHTML = metricsTable(rec);
    drawGenes(rec);
    const canExport = !STATIC && !isParent(rec);
    $("cand-export").innerHTML = "<b>export</b> (a Hugging Face checkpoint, model card and merge.yaml):" +
      '<code class="cmd" id="export-cmd">' + esc(d.export_command) + "</code>" +
      '<button id="copy-cmd">copy</button>' + (canExport ? '<button id="export-btn">export into the run</button>' : "") +
      '<span id="export-status"></span>';
    $("copy-cmd").onclick = () => navigator.clipboard && navigator.clipboard.writeText(d.export_command);
    if (canExport) $("export-btn").onclick = () => startExport(rec.id);
    if (redraw && S.view === "scatter") drawFront();
  }

  async function startExport(id) {
    $("export-btn").disabled = true;
    const r = await fetch("api/export", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ candidate: id }) });
    const job = await r.json();
    if (!r.ok) { $("export-status").textContent = " export failed: " + job.error; $("export-btn").disabled = false; return; }
    S.exportJob = job.id;
    showJob(job);
  }

  function showJob(job) {
    const st = $("export-status");
    if (!st) return;
    st.innerHTML = " export " + job.id + ": <b>" + esc(job.state) + "</b> → " + esc(job.out) +
      (job.state === "running" ? "" : "<pre>" + esc(job.log) + "</pre>");
    if (job.state !== "running") { S.exportJob = null; const b = $("export-btn"); if (b) b.disabled = false; }
  }

  // ---- progress ------------------------------------------------------------------------------
  const small = (title, xt) => ({ title: { text: title, font: { size: 13 } }, margin: { l: 55, r: 15, t: 34, b: 40 },
    xaxis: { title: { text: xt } }, showlegend: false });

  function drawProgress() {
    const p = S.progress;
    if (!p) return;
    Plotly.react("hv-plot", [{ x: p.generation, y: p.hypervolume, mode: "lines+markers", line: { color: "#1f77b4" } }],
      small("hypervolume of the front (normalised)", "generation"), PLOT_CFG);
    const t = p.throughput;
    Plotly.react("rate-plot", [{ type: "bar", x: t.generation, y: t.per_minute, marker: { color: "#9467bd" },
      hovertemplate: "gen %{x}: %{y:.1f} candidates/min<extra></extra>" }],
      small("candidates per minute (of merge + evaluation time)", "generation"), PLOT_CFG);
    const keys = Object.keys(p.time).sort((a, b) => p.time[a].mean - p.time[b].mean);
    Plotly.react("time-plot", [{ type: "bar", orientation: "h", y: keys, x: keys.map((k) => p.time[k].mean), marker: { color: "#8c564b" },
      hovertemplate: "%{y}: %{x:.3f} s per candidate<extra></extra>" }],
      Object.assign(small("where time goes (mean seconds per candidate)", "seconds"), { margin: { l: 130, r: 15, t: 34, b: 40 } }), PLOT_CFG);
    const box = $("best-plots");
    const divs = objectives().map((o) => {  // every cell first, so that no plot is sized before the grid is
      let div = box.querySelector('[data-objective="' + CSS.escape(o.name) + '"]');
      if (!div) { div = document.createElement("div"); div.className = "small"; div.dataset.objective = o.name; box.appendChild(div); }
      return div;
    });
    for (const [i, o] of objectives().entries()) {
      const div = divs[i];
      const traces = [{ x: p.generation, y: p.best[o.name] || [], mode: "lines+markers", name: "best child", line: { color: "#2ca02c" } }];
      const g0 = p.generation.length ? p.generation[0] : 0, g1 = p.generation.length ? p.generation[p.generation.length - 1] : 1;
      for (const [pid, vals] of Object.entries(p.parents)) traces.push({ x: [g0, g1], y: [vals[o.name], vals[o.name]], mode: "lines",
        name: short(pid), line: { dash: "dash", width: 1 }, hovertemplate: short(pid) + " %{y}<extra></extra>" });
      const lay = small("best " + o.name + (o.direction === "maximize" ? " (max)" : " (min)") + "; dashed: parents", "generation");
      lay.showlegend = true;
      lay.legend = { font: { size: 10 } };
      Plotly.react(div, traces, lay, PLOT_CFG);
    }
    drawWorkers();
  }

  /* Workers: the live state the driver writes (workers.json: in flight, per worker jobs and last
     seen) beside the archive's per-worker totals (candidates, seconds, last generation). */
  function drawWorkers() {
    const live = (S.run && S.run.workers) || null, done = (S.progress && S.progress.workers) || [];
    const rows = new Map(done.map((r) => [r.worker, { worker: r.worker, candidates: r.candidates, seconds: r.seconds, gen: r.last_generation }]));
    for (const r of (live && live.rows) || []) {
      const row = rows.get(r.worker) || { worker: r.worker };
      Object.assign(row, { jobs: r.jobs, last: r.last_candidate, seen: r.last_seen });
      rows.set(r.worker, row);
    }
    if (!live && !rows.size) { $("workers").innerHTML = ""; return; }
    const now = live && live.updated ? live.updated : Date.now() / 1000;
    let head = "";
    if (live) {
      const state = S.run.status === "running" ? (live.busy + " of " + live.workers + " busy, " + live.in_flight + " job(s) in flight") : "run " + S.run.status + ", no job in flight";
      head = '<p class="workers-live">' + esc(live.executor) + " × " + live.workers + ": " + esc(state) +
        (live.lost_jobs ? " · " + live.lost_jobs + " job(s) run again after a worker died" : "") + "</p>";
    }
    $("workers").innerHTML = "<h2>Workers</h2>" + head + "<table><tr><th>worker</th><th>candidates</th><th>seconds</th><th>last generation</th><th>jobs (this run of the driver)</th><th>last job back</th></tr>" +
      [...rows.values()].map((r) => "<tr><td>" + esc(r.worker) + "</td><td>" + fmt(r.candidates) + "</td><td>" + fmt(r.seconds) + "</td><td>" + fmt(r.gen) +
        "</td><td>" + fmt(r.jobs) + "</td><td>" + (r.seen ? Math.max(0, now - r.seen).toFixed(1) + " s before the last update" : "–") + "</td></tr>").join("") + "</table>";
  }

  // ---- held-out re-scores (evomm rescore) ----------------------------------------------------
  async function drawRescores() {
    const all = await api("/api/rescores");
    const parts = Object.entries(all).map(([split, data]) => {
      const names = (data.objectives || []).map((o) => o.name);
      const head = names.map((n) => "<th>" + esc(n) + " (fitness)</th><th>" + esc(n) + " (" + esc(split) + ")</th>").join("");
      const rows = (data.candidates || []).map((r) => "<tr><td>" + esc(r.id) + (r.role === "parent" ? " (parent)" : "") + "</td>" +
        names.map((n) => "<td>" + fmt((r.fitness || {})[n]) + "</td><td>" + fmt((r.rescored || {})[n]) + "</td>").join("") + "</tr>").join("");
      return "<h2>Held-out re-scoring: split " + esc(split) + "</h2><table><tr><th>candidate</th>" + head + "</tr>" + rows + "</table>";
    });
    $("rescore-section").hidden = !parts.length;
    $("rescore-section").innerHTML = parts.join("");
  }

  // ---- loading and polling -------------------------------------------------------------------
  async function loadStage() {
    const q = "?stage=" + encodeURIComponent(S.stage);
    [S.front, S.progress] = await Promise.all([api("/api/front" + q + "&view=summary", "/api/front?stage=" + S.stage + "&view=summary"), api("/api/progress" + q, "/api/progress?stage=" + S.stage)]);
  }

  async function poll() {
    try {
      const [run, cands] = await Promise.all([api("/api/run"), api("/api/candidates?since=" + S.next + "&view=summary")]);
      S.run = run;
      if (cands.next < S.next) { S.records = []; S.next = 0; return; } // the archive was rewritten: start again
      if (cands.records.length) {
        S.records.push(...cands.records);
        S.next = cands.next;
        await loadStage();
        drawMenus();
        await drawFront();
        drawProgress();
      }
      drawHeader();
    } catch (e) { $("warn").textContent = "cannot reach the server: " + (e.message || e); }
  }

  /* The view in the address (#view=scatter&x=A&y=B&stage=S&candidate=ID): a link shows what you saw. */
  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    for (const k of ["view", "x", "y", "stage"]) if (h.get(k)) S[k] = h.get(k);
    return h.get("candidate");
  }
  function writeHash() {
    const h = new URLSearchParams({ view: S.view, x: S.x, y: S.y, stage: S.stage });
    if (S.selected) h.set("candidate", S.selected);
    try { history.replaceState(null, "", "#" + h.toString()); } catch (e) { /* a sandboxed frame */ }
  }

  async function main() {
    const [run, cands] = await Promise.all([api("/api/run"), api("/api/candidates?since=0&view=summary")]);
    S.run = run; S.records = cands.records; S.next = cands.next;
    const wanted = readHash();
    drawMenus();
    await loadStage();
    performance.mark("evomm:data");  // the load-time marks (bench/dashboard_load.py reads them)
    drawHeader();
    S.selected = wanted || S.front.knee;
    await drawFront();
    performance.mark("evomm:front");
    drawProgress();
    performance.mark("evomm:progress");
    if (S.selected) await select(S.selected, false);
    performance.mark("evomm:candidate");
    await drawRescores();
    for (const id of ["view", "xobj", "yobj"]) $(id).onchange = () => { S.view = $("view").value; S.x = $("xobj").value; S.y = $("yobj").value; writeHash(); drawMenus(); drawFront(); };
    $("stage").onchange = async () => { S.stage = $("stage").value; writeHash(); await loadStage(); drawHeader(); await drawFront(); drawProgress(); };
    document.body.dataset.loaded = "1";
    if (!STATIC) {
      setInterval(poll, POLL_MS);
      setInterval(async () => { if (S.exportJob) { const jobs = await api("/api/exports"); showJob(jobs.find((j) => j.id === S.exportJob)); } }, 1000);
    }
  }

  main().catch((e) => { $("warn").textContent = "the page failed to load: " + (e.message || e); console.error(e); });
})();
