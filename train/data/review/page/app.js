// lorakit data review: the page. Plain JavaScript, no libraries, nothing fetched but this server's API.
'use strict';

const PAGE = 100;     // table rows drawn at once
const BINS = 30;      // histogram bins
const NO_HIST = new Set(['cluster']); // ids, not scores: a column but no histogram
// String fields an edit may change, wherever they sit in the example (prompt/response, messages, Alpaca,
// ShareGPT, plain text, tool-call arguments).
const EDITABLE = new Set(['system', 'prompt', 'response', 'completion', 'reasoning_content', 'instruction',
  'input', 'output', 'text', 'content', 'value', 'arguments']);

const S = {
  token: '',
  info: null,
  fields: [],
  rows: [],
  byLine: new Map(),
  view: [],           // the rows shown: filtered, then sorted
  cursor: 0,          // index into view
  pageStart: 0,
  sort: { key: 'line', dir: 1 },
  filter: { q: '', lines: null, decision: 'all', cuts: {} },
  details: new Map(), // line → Detail
  mode: 'browse',     // browse | edit | confirm | help
  confirmAction: null,
  showRendered: false,
  queue: Promise.resolve(),
  pending: 0,
};

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
}
const SVGNS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined) return '–';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

// ---- API ------------------------------------------------------------------------------------------

async function api(path, body) {
  const opts = { headers: {} };
  if (S.token) opts.headers['X-Lorakit-Token'] = S.token;
  if (body !== undefined) {
    opts.method = 'POST';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.error) || res.status + ' ' + res.statusText);
  return data;
}

function setStatus(text, cls) {
  const s = $('status');
  s.textContent = text;
  s.className = cls;
}

// save sends changes in order (one request at a time) and applies the server's answer. The promise it
// returns fails when the server refused or could not save them; the status line says so either way.
function save(changes) {
  if (!changes.length) return Promise.resolve();
  S.pending++;
  setStatus('saving…', 'busy');
  const p = S.queue.then(async () => {
    try {
      const res = await api('/api/decisions', { changes });
      S.info = res.info;
      S.pending--;
      if (S.pending === 0) setStatus('saved ✓', 'ok');
      for (const r of res.rows) applyRow(r);
      drawCounts();
    } catch (err) {
      S.pending--;
      setStatus('NOT SAVED: ' + err.message, 'err');
      const line = (S.view[S.cursor] || {}).line;
      await reloadRows().catch(() => {}); // show what the file really holds
      refilter(line);
      throw err;
    }
  });
  S.queue = p.catch(() => {});
  return p;
}

function applyRow(r) {
  const row = S.byLine.get(r.line);
  if (!row) return;
  row.decision = r.decision;
  row.edited = !!r.edited;
  row.stale = !!r.stale;
  row.prompt = r.prompt;
  row.answer = r.answer;
  S.details.delete(r.line);
  const tr = document.querySelector(`#tbody tr[data-line="${r.line}"]`);
  if (tr) tr.replaceWith(rowElement(row, S.view[S.cursor] === row));
  if (S.view[S.cursor] === row && S.mode !== 'edit') showDetail();
}

async function reloadRows() {
  const res = await api('/api/rows');
  ranges.clear();
  S.fields = res.fields;
  S.rows = res.rows;
  S.byLine = new Map(S.rows.map((r) => [r.line, r]));
  S.info = await api('/api/info');
}

// ---- filter and sort --------------------------------------------------------------------------------

function fieldIndex(name) { return S.fields.indexOf(name); }

function passes(row) {
  const f = S.filter;
  switch (f.decision) {
    case 'all': break;
    case 'edited': if (!row.edited) return false; break;
    case 'stale': if (!row.stale) return false; break;
    case 'bad': if (!row.error) return false; break;
    default: if (row.decision !== f.decision) return false;
  }
  if (f.lines && !f.lines.has(row.line)) return false;
  for (const [name, c] of Object.entries(f.cuts)) {
    const v = row.scores[fieldIndex(name)];
    if (c.min === null && c.max === null) continue;
    if (v === null || v === undefined) return false;
    if (c.min !== null && v < c.min) return false;
    if (c.max !== null && v > c.max) return false;
  }
  return true;
}

// sortKey returns the function giving a row's value for the sort column.
function sortKey(key) {
  if (key === 'line') return (row) => row.line;
  if (key === 'decision') return (row) => row.decision + (row.edited ? '+' : '');
  if (key === 'format') return (row) => row.format || '';
  if (key === 'prompt') return (row) => row.prompt;
  const i = fieldIndex(key);
  return (row) => (i < 0 ? null : row.scores[i]);
}

// refilter applies the filters and the sort; the selection goes to the first row shown, or stays on keepLine.
function refilter(keepLine) {
  const cur = keepLine;
  const { key, dir } = S.sort;
  const value = sortKey(key);
  S.view = S.rows.filter(passes);
  S.view.sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === y) return a.line - b.line;
    if (x === null || x === undefined) return 1; // missing values last, either way
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * dir;
  });
  const at = cur === undefined ? -1 : S.view.findIndex((r) => r.line === cur);
  S.cursor = Math.max(0, at);
  S.pageStart = Math.floor(S.cursor / PAGE) * PAGE;
  saveView();
  drawAll();
}

// The sort, the filters and the selected line outlive a reload (this tab only); decisions live on the server.
function viewKey() { return 'lorakit-review-view:' + (S.info ? S.info.scored : ''); }

function saveView() {
  const f = S.filter;
  const v = { sort: S.sort, q: f.q, decision: f.decision, cuts: f.cuts, line: (S.view[S.cursor] || {}).line };
  try { sessionStorage.setItem(viewKey(), JSON.stringify(v)); } catch (e) { /* storage off: nothing kept */ }
}

async function restoreView() {
  let v = null;
  try { v = JSON.parse(sessionStorage.getItem(viewKey()) || 'null'); } catch (e) { v = null; }
  if (!v) { refilter(); return; }
  S.sort = v.sort || S.sort;
  S.filter.decision = v.decision || 'all';
  S.filter.cuts = v.cuts || {};
  $('decision').value = S.filter.decision;
  $('q').value = v.q || '';
  if (v.q) await runSearch(v.line);
  else refilter(v.line);
}

// ---- drawing ----------------------------------------------------------------------------------------

function drawAll() {
  drawCounts();
  drawHists();
  drawTable();
  showDetail();
}

function drawCounts() {
  const i = S.info;
  if (!i) return;
  let undecided = S.rows.filter((r) => r.decision === 'undecided').length;
  $('counts').textContent = `${i.examples} examples · ${i.kept} kept · ${i.dropped} dropped · ` +
    `${undecided} undecided · ${i.edited} edited`;
  $('shown').textContent = `${S.view.length} shown`;
}

function histFields() {
  return S.fields.filter((f) => !NO_HIST.has(f) && fieldRange(f) !== null);
}

// range of a field over every row, clipped to the 0.5–99.5 percentiles so one outlier does not flatten it;
// the scores never change while the page is open, so each is computed once
const ranges = new Map();
function fieldRange(name) {
  if (!ranges.has(name)) ranges.set(name, computeRange(name));
  return ranges.get(name);
}

function computeRange(name) {
  const i = fieldIndex(name);
  const vals = S.rows.map((r) => r.scores[i]).filter((v) => v !== null && isFinite(v)).sort((a, b) => a - b);
  if (!vals.length) return null;
  let lo = vals[Math.floor(0.005 * (vals.length - 1))];
  let hi = vals[Math.ceil(0.995 * (vals.length - 1))];
  if (hi <= lo) hi = lo + 1;
  return { lo, hi, i };
}

function drawHists() {
  const box = $('hists');
  box.replaceChildren();
  for (const name of histFields()) box.append(histogram(name));
}

function histogram(name) {
  const W = 182, H = 40, r = fieldRange(name);
  const cut = S.filter.cuts[name] || { min: null, max: null };
  const fig = el('div', { class: 'hist' + (cut.min !== null || cut.max !== null ? ' cut' : ''), 'data-field': name });
  fig.append(el('div', { class: 'name', text: name }));
  const s = svg('svg', { width: W, height: H + 12, viewBox: `0 0 ${W} ${H + 12}` });
  if (r) {
    const all = new Array(BINS).fill(0), shown = new Array(BINS).fill(0);
    const bin = (v) => Math.max(0, Math.min(BINS - 1, Math.floor((v - r.lo) / (r.hi - r.lo) * BINS)));
    for (const row of S.rows) { const v = row.scores[r.i]; if (v !== null) all[bin(v)]++; }
    for (const row of S.view) { const v = row.scores[r.i]; if (v !== null) shown[bin(v)]++; }
    const top = Math.max(1, ...all), bw = W / BINS;
    all.forEach((c, k) => {
      const h = c / top * H;
      s.append(svg('rect', { class: 'bar-all', x: k * bw + 0.5, y: H - h, width: bw - 1, height: h }));
      const hs = shown[k] / top * H;
      s.append(svg('rect', { class: 'bar-shown', x: k * bw + 0.5, y: H - hs, width: bw - 1, height: hs }));
    });
    const xOf = (v) => Math.max(0, Math.min(W, (v - r.lo) / (r.hi - r.lo) * W));
    if (cut.min !== null) {
      s.append(svg('rect', { class: 'outside', x: 0, y: 0, width: xOf(cut.min), height: H }));
      s.append(svg('line', { class: 'cutline', x1: xOf(cut.min), x2: xOf(cut.min), y1: 0, y2: H }));
    }
    if (cut.max !== null) {
      s.append(svg('rect', { class: 'outside', x: xOf(cut.max), y: 0, width: W - xOf(cut.max), height: H }));
      s.append(svg('line', { class: 'cutline', x1: xOf(cut.max), x2: xOf(cut.max), y1: 0, y2: H }));
    }
    const lo = svg('text', { class: 'axis', x: 0, y: H + 10 }); lo.textContent = fmt(r.lo);
    const hi = svg('text', { class: 'axis', x: W, y: H + 10, 'text-anchor': 'end' }); hi.textContent = fmt(r.hi);
    s.append(lo, hi);
    brush(s, name, r, W, H);
  }
  fig.append(s);
  const input = (which) => el('input', {
    type: 'number', step: 'any', placeholder: which, 'data-cut': which, 'data-field': name,
    value: cut[which] === null ? '' : String(cut[which]),
    onchange: (e) => setCut(name, which, e.target.value === '' ? null : Number(e.target.value)),
  });
  fig.append(el('div', { class: 'bounds' }, input('min'), input('max')));
  return fig;
}

// brush: drag across the histogram to cut the field to a range; double-click clears the cut.
function brush(s, name, r, W, H) {
  let x0 = null, band = null;
  const xAt = (e) => Math.max(0, Math.min(W, e.clientX - s.getBoundingClientRect().left));
  const valAt = (x) => Number((r.lo + x / W * (r.hi - r.lo)).toPrecision(4));
  s.addEventListener('mousedown', (e) => {
    x0 = xAt(e);
    band = svg('rect', { class: 'outside', x: x0, y: 0, width: 0, height: H });
    s.append(band);
    e.preventDefault();
  });
  s.addEventListener('mousemove', (e) => {
    if (x0 === null) return;
    const x = xAt(e);
    band.setAttribute('x', Math.min(x, x0));
    band.setAttribute('width', Math.abs(x - x0));
  });
  const end = (e) => {
    if (x0 === null) return;
    const x = xAt(e), a = Math.min(x, x0), b = Math.max(x, x0);
    x0 = null;
    if (b - a < 3) { band.remove(); return; }
    S.filter.cuts[name] = { min: valAt(a), max: valAt(b) };
    refilter();
  };
  s.addEventListener('mouseup', end);
  s.addEventListener('mouseleave', (e) => { if (x0 !== null) end(e); });
  s.addEventListener('dblclick', () => { delete S.filter.cuts[name]; refilter(); });
}

function setCut(name, which, v) {
  const c = S.filter.cuts[name] || { min: null, max: null };
  c[which] = v === null || isNaN(v) ? null : v;
  S.filter.cuts[name] = c;
  refilter();
}

function columns() {
  return [
    { key: 'line', label: '#', num: true },
    { key: 'decision', label: 'decision' },
    { key: 'format', label: 'format' },
    { key: 'prompt', label: 'example' },
    ...S.fields.map((f) => ({ key: f, label: f, num: true, score: true })),
  ];
}

function drawTable() {
  const head = $('thead');
  head.replaceChildren();
  for (const c of columns()) {
    const arrow = S.sort.key === c.key ? (S.sort.dir > 0 ? ' ▲' : ' ▼') : '';
    head.append(el('th', {
      'data-sort': c.key, class: S.sort.key === c.key ? 'sorted' : null, text: c.label + arrow,
      title: 'sort by ' + c.label,
      onclick: () => {
        S.sort = { key: c.key, dir: S.sort.key === c.key ? -S.sort.dir : (c.score ? -1 : 1) };
        refilter();
      },
    }));
  }
  const body = $('tbody');
  body.replaceChildren();
  const end = Math.min(S.view.length, S.pageStart + PAGE);
  for (let k = S.pageStart; k < end; k++) body.append(rowElement(S.view[k], k === S.cursor));
  $('pageinfo').textContent = S.view.length ? `rows ${S.pageStart + 1}–${end} of ${S.view.length}` : 'no rows';
}

function badge(cls, text) { return el('span', { class: 'badge ' + cls, text }); }

function rowElement(row, selected) {
  const tr = el('tr', { 'data-line': row.line, class: [row.decision, selected ? 'sel' : ''].join(' ').trim() });
  tr.addEventListener('click', () => { select(S.view.indexOf(row)); });
  tr.append(el('td', { class: 'num', text: String(row.line) }));
  tr.append(el('td', { class: 'dec' }, badge(row.decision, row.decision), row.edited ? badge('edited', 'edited') : null,
    row.stale ? badge('stale', 'changed') : null));
  tr.append(el('td', { class: 'fmt', title: row.format || '', text: row.format || '' }));
  const text = row.error ? '⚠ ' + row.error : `${row.prompt}  →  ${row.answer}`;
  tr.append(el('td', { class: 'text', title: text, text }));
  for (const v of row.scores) tr.append(el('td', { class: 'num', text: fmt(v) }));
  while (tr.children.length < columns().length) tr.append(el('td', { class: 'num', text: '–' }));
  return tr;
}

function select(k) {
  if (k < 0 || k >= S.view.length) return;
  if (S.mode === 'edit') S.mode = 'browse';
  const old = document.querySelector('#tbody tr.sel');
  if (old) old.classList.remove('sel');
  S.cursor = k;
  if (k < S.pageStart || k >= S.pageStart + PAGE) {
    S.pageStart = Math.floor(k / PAGE) * PAGE;
    drawTable();
  }
  const tr = document.querySelector(`#tbody tr[data-line="${S.view[k].line}"]`);
  if (tr) { tr.classList.add('sel'); tr.scrollIntoView({ block: 'nearest', inline: 'start' }); }
  showDetail();
}

// ---- the example ------------------------------------------------------------------------------------

async function detailOf(line) {
  if (!S.details.has(line)) S.details.set(line, await api('/api/examples/' + line));
  return S.details.get(line);
}

async function showDetail() {
  const row = S.view[S.cursor];
  const box = $('detail');
  if (!row) { box.replaceChildren(el('p', { class: 'muted', text: 'No example matches the filters.' })); return; }
  let d;
  try { d = await detailOf(row.line); } catch (err) {
    box.replaceChildren(el('p', { class: 'error', text: err.message }));
    return;
  }
  if (S.view[S.cursor] !== row || S.mode === 'edit') return; // moved on meanwhile
  box.replaceChildren(...detailView(row, d));
  box.dataset.line = row.line;
}

function detailView(row, d) {
  const out = [];
  out.push(el('h2', {}, `Line ${row.line}`, badge(row.decision, row.decision),
    row.edited ? badge('edited', 'edited') : null, row.stale ? badge('stale', 'changed since decided') : null,
    el('span', { class: 'muted', text: row.format || '' })));
  out.push(el('div', { class: 'actions' },
    el('button', { class: 'keep', type: 'button', text: 'keep (y)', onclick: () => decide('keep', true) }),
    el('button', { class: 'drop', type: 'button', text: 'drop (n)', onclick: () => decide('drop', true) }),
    el('button', { type: 'button', text: 'undecided (u)', onclick: () => decide('undecided', false) }),
    d.original || d.edit ? el('button', { type: 'button', text: 'edit (e)', onclick: startEdit }) : null,
    row.edited ? el('button', { type: 'button', text: 'revert edit (R)', onclick: revertEdit }) : null));
  if (row.stale) out.push(el('p', { class: 'error', text: 'The review file has a decision for this line made on a different example (the scored file changed). It is not applied; decide again.' }));
  if (row.error) out.push(el('p', { class: 'error', text: row.error }));
  const scores = el('table', { class: 'scores' });
  S.fields.forEach((f, i) => scores.append(el('tr', {}, el('td', { text: f }), el('td', { text: fmt(row.scores[i]) }))));
  out.push(scores);
  if (d.edit) out.push(el('p', { class: 'muted', text: 'Showing the edited example (what training will read).' }));
  if (d.tools) out.push(el('details', {}, el('summary', { text: `tools (${toolCount(d.tools)})` }),
    el('pre', { text: JSON.stringify(d.tools, null, 2) })));
  for (const t of d.chat || []) out.push(turnView(t));
  if (d.render_error) out.push(el('p', { class: 'error', text: d.render_error }));
  if (d.rendered) {
    const pre = el('pre', { class: 'rendered' });
    for (const seg of d.rendered) pre.append(seg.loss ? el('mark', { text: seg.text }) : document.createTextNode(seg.text));
    out.push(el('details', { id: 'rendered', open: S.showRendered, ontoggle: (e) => { S.showRendered = e.target.open; } },
      el('summary', { text: 'as the model sees it (its chat template; the trained-on text highlighted)' }), pre));
  }
  if (d.edit && d.original) out.push(el('details', {}, el('summary', { text: 'original example (JSON)' }),
    el('pre', { text: JSON.stringify(d.original, null, 2) })));
  return out;
}

function toolCount(tools) { return Array.isArray(tools) ? tools.length : 0; }

function turnView(t) {
  const who = t.role + (t.name ? ` · ${t.name}` : '') + (t.tool_call_id ? ` · ${t.tool_call_id}` : '') +
    (t.no_loss ? ' · weight 0 (not trained on)' : '');
  const div = el('div', { class: 'turn ' + t.role, 'data-role': t.role }, el('div', { class: 'role', text: who }));
  if (t.reasoning) {
    div.append(el('details', { class: 'reasoning' },
      el('summary', { text: `reasoning (${t.reasoning.length} characters)` }), el('div', { text: t.reasoning })));
  }
  if (t.content) div.append(el('div', { class: 'content', text: t.content }));
  for (const c of t.tool_calls || []) {
    let args = c.arguments;
    try { args = JSON.stringify(JSON.parse(c.arguments), null, 2); } catch (e) { /* shown as given */ }
    div.append(el('div', { class: 'toolcall' }, el('span', { class: 'mono', text: `→ ${c.name}` + (c.id ? `  (${c.id})` : '') }),
      el('pre', { text: args })));
  }
  return div;
}

// ---- decisions ----------------------------------------------------------------------------------------

function decide(decision, advance) {
  const row = S.view[S.cursor];
  if (!row) return;
  row.decision = decision; // shown at once; the server's answer confirms it
  const tr = document.querySelector(`#tbody tr[data-line="${row.line}"]`);
  if (tr) tr.replaceWith(rowElement(row, true));
  save([{ line: row.line, hash: row.hash, decision }]).catch(() => {});
  if (advance && S.cursor + 1 < S.view.length) select(S.cursor + 1);
  else showDetail();
}

function bulk(decision) {
  const rows = S.view.filter((r) => decision !== 'keep' || !r.error);
  if (!rows.length) return;
  ask(`${decision === 'keep' ? 'Keep' : 'Drop'} all ${rows.length} examples shown?`, () => {
    for (const r of rows) r.decision = decision;
    drawTable();
    save(rows.map((r) => ({ line: r.line, hash: r.hash, decision }))).catch(() => {});
  });
}

function ask(text, action) {
  S.mode = 'confirm';
  S.confirmAction = action;
  $('confirmtext').textContent = text;
  $('overlay').hidden = false;
  $('confirm').hidden = false;
  $('help').hidden = true;
  $('confirmyes').focus();
}

function closeOverlay() {
  $('overlay').hidden = true;
  $('confirm').hidden = true;
  $('help').hidden = true;
  S.mode = 'browse';
  S.confirmAction = null;
}

function showHelp() {
  S.mode = 'help';
  $('overlay').hidden = false;
  $('help').hidden = false;
  $('confirm').hidden = true;
}

// editable string leaves of an example, with their paths (e.g. messages[2].content)
function leaves(obj, path, out) {
  if (Array.isArray(obj)) obj.forEach((v, i) => leaves(v, `${path}[${i}]`, out));
  else if (obj && typeof obj === 'object') {
    for (const [k, v] of Object.entries(obj)) {
      const p = path ? `${path}.${k}` : k;
      if (typeof v === 'string' && EDITABLE.has(k)) out.push({ path: p, holder: obj, key: k, value: v, label: labelOf(obj, p) });
      else leaves(v, p, out);
    }
  }
  return out;
}

function labelOf(holder, path) { return holder && holder.role ? `${path} (${holder.role})` : path; }

async function startEdit() {
  const row = S.view[S.cursor];
  if (!row) return;
  const d = await detailOf(row.line);
  const base = d.edit || d.original;
  if (!base) return;
  S.mode = 'edit';
  const copy = JSON.parse(JSON.stringify(base));
  const fields = leaves(copy, '', []);
  const form = el('div', { class: 'editform', 'data-line': row.line });
  form.append(el('h2', {}, `Editing line ${row.line}`, el('span', { class: 'muted', text: 'Ctrl+Enter saves and keeps it · Esc cancels' })));
  const err = el('p', { class: 'error', id: 'editerror' });
  for (const f of fields) {
    const ta = el('textarea', { 'data-path': f.path, rows: Math.min(18, f.value.split('\n').length + 1) });
    ta.value = f.value;
    f.input = ta;
    form.append(el('label', { text: f.label }), ta);
  }
  const submit = async () => {
    for (const f of fields) f.holder[f.key] = f.input.value;
    try {
      await save([{ line: row.line, hash: row.hash, decision: 'keep', edit: copy }]);
    } catch (e) {
      err.textContent = 'Not saved: ' + e.message;
      return;
    }
    S.mode = 'browse';
    showDetail();
  };
  form.append(err, el('div', { class: 'actions' },
    el('button', { type: 'button', class: 'keep', id: 'editsave', text: 'save (Ctrl+Enter)', onclick: submit }),
    el('button', { type: 'button', text: 'cancel (Esc)', onclick: cancelEdit })));
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
    else if (e.key === 'Escape') { e.preventDefault(); cancelEdit(); }
  });
  $('detail').replaceChildren(form);
  const first = fields.find((f) => /response|output|content|value|text/.test(f.key) && f.holder.role !== 'user') || fields[0];
  if (first) first.input.focus();
}

function cancelEdit() {
  S.mode = 'browse';
  document.activeElement && document.activeElement.blur();
  showDetail();
}

function revertEdit() {
  const row = S.view[S.cursor];
  if (row && row.edited) save([{ line: row.line, hash: row.hash, revert_edit: true }]).catch(() => {});
}

// ---- keyboard -----------------------------------------------------------------------------------------

function typing(e) {
  const t = e.target;
  return t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
}

function onKey(e) {
  if (S.mode === 'confirm') {
    if (e.key === 'Enter') { e.preventDefault(); const a = S.confirmAction; closeOverlay(); if (a) a(); }
    else if (e.key === 'Escape') { e.preventDefault(); closeOverlay(); }
    return;
  }
  if (S.mode === 'help') { if (e.key === 'Escape' || e.key === '?') { e.preventDefault(); closeOverlay(); } return; }
  if (S.mode === 'edit' || e.ctrlKey || e.metaKey || e.altKey) return;
  if (typing(e)) {
    if (e.key === 'Escape') e.target.blur();
    return;
  }
  const keys = {
    j: () => select(S.cursor + 1), ArrowDown: () => select(S.cursor + 1),
    k: () => select(S.cursor - 1), ArrowUp: () => select(S.cursor - 1),
    g: () => select(0), G: () => select(S.view.length - 1),
    y: () => decide('keep', true), n: () => decide('drop', true), u: () => decide('undecided', false),
    e: startEdit, R: revertEdit,
    Y: () => bulk('keep'), N: () => bulk('drop'),
    '/': () => $('q').focus(),
    r: () => document.querySelectorAll('#detail details.reasoning').forEach((d) => { d.open = !d.open; }),
    t: () => { const d = $('rendered'); if (d) d.open = !d.open; },
    '?': showHelp,
  };
  const f = keys[e.key];
  if (f) { e.preventDefault(); f(); }
}

// ---- start ----------------------------------------------------------------------------------------------

async function runSearch(keepLine) {
  const q = $('q').value.trim();
  S.filter.q = q;
  if (!q) { S.filter.lines = null; refilter(keepLine); return; }
  try {
    const res = await api('/api/search?q=' + encodeURIComponent(q));
    S.filter.lines = new Set(res.lines);
    refilter(keepLine);
  } catch (err) { setStatus('search: ' + err.message, 'err'); }
}

function banner() {
  const b = $('banner'), i = S.info, parts = [];
  if (i.stale_lines.length) {
    parts.push(`${i.stale_lines.length} decisions in ${i.review_file} were made on examples that have changed since ` +
      `(lines ${i.stale_lines.slice(0, 8).join(', ')}${i.stale_lines.length > 8 ? ', …' : ''}): they are not applied ` +
      `until you decide those lines again (filter “changed since decided”).`);
  }
  if (i.repaired) parts.push(`${i.review_file} ended in a half-written record (the previous session stopped mid-save); it was cut off, every complete decision is kept.`);
  b.textContent = parts.join(' ');
  b.hidden = !parts.length;
}

function readToken() {
  const h = new URLSearchParams(location.hash.slice(1)).get('token') || new URLSearchParams(location.search).get('token');
  if (h) sessionStorage.setItem('lorakit-review-token', h);
  return h || sessionStorage.getItem('lorakit-review-token') || '';
}

async function start() {
  S.token = readToken();
  document.addEventListener('keydown', onKey);
  $('q').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); runSearch(); } });
  $('q').addEventListener('search', () => runSearch());
  $('decision').addEventListener('change', (e) => { S.filter.decision = e.target.value; refilter(); });
  $('clear').addEventListener('click', () => {
    S.filter = { q: '', lines: null, decision: 'all', cuts: {} };
    $('q').value = ''; $('decision').value = 'all';
    refilter();
  });
  $('bulkkeep').addEventListener('click', () => bulk('keep'));
  $('bulkdrop').addEventListener('click', () => bulk('drop'));
  $('prevpage').addEventListener('click', () => select(Math.max(0, S.pageStart - PAGE)));
  $('nextpage').addEventListener('click', () => select(Math.min(S.view.length - 1, S.pageStart + PAGE)));
  $('helpbtn').addEventListener('click', showHelp);
  $('helpclose').addEventListener('click', closeOverlay);
  $('confirmyes').addEventListener('click', () => { const a = S.confirmAction; closeOverlay(); if (a) a(); });
  $('confirmno').addEventListener('click', closeOverlay);
  try {
    await reloadRows();
  } catch (err) {
    setStatus(err.message, 'err');
    return;
  }
  const base = (p) => p.split(/[\\/]/).pop();
  $('file').textContent = `${base(S.info.scored)} → ${base(S.info.review_file)}`;
  $('file').title = `${S.info.scored} → ${S.info.review_file}`;
  banner();
  setStatus('saved ✓', 'ok');
  await restoreView();
  document.body.dataset.ready = '1';
}

start();
