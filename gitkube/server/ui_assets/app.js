// gitkube web dashboard: plain JS, no dependencies, everything from the package.
// Data: /ui/api/status (= `gitkube status -o json`), /ui/api/objects (the shared
// cache, with `gitkube get` rows), live changes from /ui/api/watch (SSE).
'use strict';

const ROW = 32;            // px, keep in step with --row in app.css
const OVERSCAN = 10;       // rows rendered beyond the visible ones
const LOG_LINES = 2000;    // lines the log view keeps
const KIND_ORDER = ['Namespace', 'ConfigMap', 'Secret', 'Deployment', 'ReplicationController',
  'ReplicaSet', 'Service', 'Endpoints', 'Pod', 'Node', 'Event'];
const SHORT = { Namespace: 'ns', ConfigMap: 'cm', Secret: 'secret', Deployment: 'deploy',
  ReplicationController: 'rc', ReplicaSet: 'rs', Service: 'svc', Endpoints: 'ep', Pod: 'pod',
  Node: 'node', Event: 'ev' };

const S = {
  objects: new Map(),      // key -> summary
  status: null,            // the status report
  headers: {},
  session: { readOnly: true, authenticated: false },
  expanded: new Map(),     // row path -> bool (default: expanded)
  rows: [],                // the flattened tree
  treeDirty: true,         // rows to build again
  rowEls: new Map(),       // row id -> element (visible rows only)
  idx: null,               // indices, rebuilt when objects change
  rev: 0,
  loaded: false,
  view: 'overview',
  pod: null,               // [ns, name] of the pod view
  drift: [],
  diffs: null,
};
window.__gk = { interactiveAt: 0, updates: 0, renders: 0 };

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s == null ? '' : s).replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const short = (rev) => (rev || '').slice(0, 12);
const badge = (cls, text) => text ? `<span class="badge ${cls}-${esc(text)}">${esc(text)}</span>` : '';
const nsName = (ns, name) => ns ? `${ns}/${name}` : name;

async function getJSON(url) {
  const r = await fetch(url, { credentials: 'same-origin' });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).slice(0, 200)}`);
  return r.json();
}

function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

// ------------------------------------------------------------------ session and actions

async function loadSession() {
  S.session = await getJSON('/ui/api/session');
  const s = S.session;
  $('readonly').hidden = !s.readOnly;
  $('signin').hidden = s.readOnly || s.authenticated;
  for (const id of ['act-sync', 'act-suspend', 'act-resume']) $(id).disabled = !s.authenticated;
  const why = s.readOnly ? 'read-only: no token is configured' : 'sign in with the API token first';
  for (const id of ['act-sync', 'act-suspend', 'act-resume']) $(id).title = s.authenticated ? '' : why;
}

async function post(url, body) {
  const r = await fetch(url, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error(data.error || `${r.status}`);
  return data;
}

function wireActions() {
  $('signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await post('/ui/api/login', { token: $('token').value });
      $('token').value = '';
      await loadSession();
      toast('signed in');
    } catch (e) { toast(`sign-in failed: ${e.message}`); }
  });
  for (const action of ['sync', 'suspend', 'resume']) {
    $(`act-${action}`).addEventListener('click', async () => {
      try { toast((await post(`/ui/api/${action}`)).message); } catch (e) { toast(`${action} failed: ${e.message}`); }
    });
  }
}

// ------------------------------------------------------------------ status: header, overview, history

let statusTimer = 0, statusBusy = false, statusAgain = false;
function scheduleStatus(delay = 150) {
  if (statusBusy) { statusAgain = true; return; }
  if (statusTimer) return;  // one read soon is enough; a stream of changes must not postpone it
  statusTimer = setTimeout(() => { statusTimer = 0; loadStatus(); }, delay);
}

async function loadStatus() {
  statusBusy = true;
  try {
    S.status = await getJSON('/ui/api/status');
    S.declared = new Map(S.status.objects.map((o) => [`${o.kind}/${o.namespace}/${o.name}`, o]));
    renderSummary();
    renderOverview();
    if (S.view === 'history') renderHistory();
    S.idx = null;
    invalidate();
  } catch (e) {
    $('summary').textContent = `cannot read the status: ${e.message}`;
  } finally {
    statusBusy = false;
    if (statusAgain) { statusAgain = false; scheduleStatus(); }
  }
}

function renderSummary() {
  const st = S.status, sync = st.sync;
  $('summary').innerHTML = `${badge('s', sync.phase)} ${badge('h', st.health.status)}
    <span class="rev mono" title="${esc(sync.revision)}">${esc(short(sync.revision)) || 'no revision'}</span>
    <span class="rev">${esc((sync.commit && sync.commit.message || '').split('\n')[0])}</span>`;
}

function renderOverview() {
  const st = S.status, sync = st.sync, c = sync.commit || {};
  const counts = Object.entries(st.health.counts || {}).map(([k, v]) => `${badge('h', k)} ${v}`).join(' ');
  const errors = (st.errors || []).slice(0, 20).map((e) =>
    `<li class="err">${e.location ? `<code>${esc(e.location)}</code>: ` : ''}${esc(e.kind ? `${e.kind}/${e.name}: ` : '')}${esc(e.field ? `${e.field}: ` : '')}${esc(e.message)}</li>`).join('');
  $('overview').innerHTML = `
    <div class="card"><h3>Synced revision</h3>
      <p><code title="${esc(sync.revision)}">${esc(short(sync.revision)) || '—'}</code></p>
      <p>${esc(c.message || '')}</p>
      <p class="note">${esc(c.author || '')}${c.time ? ` · ${esc(c.time)}` : ''}</p>
      <p class="note">${esc(st.source.repo)} · ${esc(st.source.ref)}${st.source.path ? ` · ${esc(st.source.path)}` : ''}</p></div>
    <div class="card"><h3>Sync</h3><p>${badge('s', sync.phase)} ${sync.age ? `${esc(sync.age)} ago` : ''}</p>
      <p>${esc(sync.message)}</p>
      <p>Suspended: <strong>${sync.suspended ? 'yes' : 'no'}</strong></p></div>
    <div class="card"><h3>Health</h3><p>${badge('h', st.health.status)}</p><p>${counts || '—'}</p>
      <p class="note">${(st.objects || []).length} objects in git, ${(st.nodes || []).length} nodes</p></div>
    <div class="card"><h3>Last error</h3>${errors ? `<ul>${errors}</ul>` : '<p class="note">none</p>'}</div>`;
  const dl = (st.deliveries || []).slice(-20).reverse();
  $('deliveries').innerHTML = dl.length ? `<table><thead><tr><th scope="col">Time</th><th scope="col">Hook</th>
    <th scope="col">Event</th><th scope="col">Status</th><th scope="col">Outcome</th><th scope="col">Reason</th></tr></thead><tbody>${
    dl.map((d) => `<tr><td>${esc(d.time)}</td><td>${esc(d.hook)}</td><td>${esc(d.event)}</td><td>${esc(d.status)}</td>
      <td>${esc(d.outcome)}</td><td>${esc(d.reason)}</td></tr>`).join('')}</tbody></table>` : '<p class="note">no webhook deliveries</p>';
}

function renderHistory() {
  const hist = ((S.status && S.status.history) || []).slice().reverse();
  $('history').innerHTML = hist.length ? `<table><thead><tr><th scope="col">Finished</th><th scope="col">Commit</th>
    <th scope="col">Outcome</th><th scope="col">Duration</th><th scope="col">Created</th><th scope="col">Updated</th>
    <th scope="col">Deleted</th><th scope="col">Message</th><th scope="col">Diff</th></tr></thead><tbody>${
    hist.map((h, i) => `<tr class="hist"><td>${esc(h.finishedAt)}</td><td><code title="${esc(h.revision)}">${esc(short(h.revision))}</code>
      ${esc(h.commitMessage || '')}</td><td>${badge('o', h.outcome)}</td><td>${Number(h.durationSeconds || 0).toFixed(2)} s</td>
      <td>${h.created}</td><td>${h.updated}</td><td>${h.deleted}</td><td>${esc(h.message)}</td>
      <td>${h.created || h.updated || h.deleted ? `<button type="button" data-diff="${i}">Diff</button>` : ''}</td></tr>`).join('')}</tbody></table>`
    : '<p class="note">no sync yet</p>';
  $('history').querySelectorAll('button[data-diff]').forEach((b) =>
    b.addEventListener('click', () => showDiff(hist[Number(b.dataset.diff)])));
}

async function showDiff(h) {
  const panel = $('diff');
  try {
    const { diffs } = await getJSON('/ui/api/diffs');
    const d = diffs.find((x) => x.startedAt === h.startedAt && x.revision === h.revision);
    if (!d) { panel.innerHTML = '<p class="note">this sync\'s diff was not recorded</p>'; return; }
    panel.innerHTML = `<h3 id="h-diff" tabindex="-1">Diff applied by ${esc(short(h.revision))}${d.truncated ? ' (truncated)' : ''}</h3>
      <pre aria-labelledby="h-diff" tabindex="0">${colourDiff(d.diff)}</pre>`;
    $('h-diff').focus();
  } catch (e) { panel.textContent = e.message; }
}

function colourDiff(text) {
  return text.split('\n').map((l) => {
    const cls = l.startsWith('+++') || l.startsWith('---') ? 'hunk' : l.startsWith('+') ? 'add'
      : l.startsWith('-') ? 'del' : l.startsWith('@@') || l.startsWith('#') ? 'hunk' : '';
    return cls ? `<span class="${cls}">${esc(l)}</span>` : esc(l);
  }).join('\n');
}

async function renderDrift() {
  try { S.drift = (await getJSON('/ui/api/drift')).objects || []; } catch (e) { $('drift').textContent = e.message; return; }
  $('count-drift').textContent = S.drift.length ? `(${S.drift.length})` : '';
  if (!S.drift.length) {
    $('drift').innerHTML = '<p class="note">No object differs from git. (With self-heal on, gitkube puts drift back at once.)</p>';
    return;
  }
  $('drift').innerHTML = S.drift.map((d) => {
    const g = (d.git || '').split('\n'), c = (d.cluster || '').split('\n');
    const gs = new Set(g), cs = new Set(c);
    const side = (lines, other, cls) => lines.map((l) => other.has(l) ? esc(l) : `<span class="${cls}">${esc(l)}</span>`).join('\n');
    return `<h3>${esc(d.kind)}/${esc(nsName(d.namespace, d.name))} <span class="note">${esc(d.path)} · ${esc(d.fields.join(', '))}</span></h3>
      ${d.truncated ? '<p class="note">too large to show</p>' : `<div class="side"><div><h4>git</h4><pre tabindex="0">${side(g, cs, 'add')}</pre></div>
      <div><h4>cluster</h4><pre tabindex="0">${side(c, gs, 'del')}</pre></div></div>`}`;
  }).join('');
}

// ------------------------------------------------------------------ objects and the tree

function indices() {
  if (S.idx) return S.idx;
  const byUid = new Map(), children = new Map(), podsByLabel = new Map(), byKindNsName = new Map();
  const kinds = new Set(), nss = new Set();
  for (const o of S.objects.values()) {
    if (o.uid) byUid.set(o.uid, o);
    byKindNsName.set(`${o.kind}/${o.ns}/${o.name}`, o);
    kinds.add(o.kind);
    if (o.ns) nss.add(o.ns);
    for (const u of o.owners) {
      let l = children.get(u);
      if (!l) children.set(u, l = []);
      l.push(o);
    }
    if (o.kind === 'Pod') {
      for (const [k, v] of Object.entries(o.labels)) {
        const lk = `${o.ns}\u0000${k}=${v}`;
        let s = podsByLabel.get(lk);
        if (!s) podsByLabel.set(lk, s = []);
        s.push(o);
      }
    }
  }
  S.idx = { byUid, children, podsByLabel, byKindNsName, kinds, nss };
  updateFilterOptions(kinds, nss);
  return S.idx;
}

function updateFilterOptions(kinds, nss) {
  for (const [id, values] of [['f-kind', kinds], ['f-ns', nss]]) {
    const sel = $(id), have = new Set([...sel.options].map((o) => o.value));
    const sorted = [...values].sort();
    if (sorted.every((v) => have.has(v)) && have.size === sorted.length + 1) continue;
    const cur = sel.value;
    sel.innerHTML = '<option value="">all</option>' + sorted.map((v) => `<option>${esc(v)}</option>`).join('');
    sel.value = cur;
  }
}

const kindRank = (k) => { const i = KIND_ORDER.indexOf(k); return i < 0 ? 99 : i; };
const byKindName = (a, b) => kindRank(a.kind) - kindRank(b.kind) || (a.ns || '').localeCompare(b.ns || '') || a.name.localeCompare(b.name);

function podsSelected(ns, selector, idx) {
  const pairs = Object.entries(selector || {});
  if (!pairs.length) return [];
  let best = null;
  for (const [k, v] of pairs) {
    const l = idx.podsByLabel.get(`${ns}\u0000${k}=${v}`) || [];
    if (!best || l.length < best.length) best = l;
  }
  return best.filter((p) => pairs.every(([k, v]) => p.labels[k] === v));
}

function childrenOf(o, idx) {
  let kids = o.uid ? (idx.children.get(o.uid) || []).slice() : [];
  if (o.kind === 'Service') {
    const ep = idx.byKindNsName.get(`Endpoints/${o.ns}/${o.name}`);
    if (ep) kids.push(ep);
  } else if (o.kind === 'Endpoints') {
    const svc = idx.byKindNsName.get(`Service/${o.ns}/${o.name}`);
    if (svc) kids = kids.concat(podsSelected(o.ns, svc.selector, idx));
  }
  return kids.sort(byKindName);
}

function parseLabelFilter(text) {
  const t = text.trim();
  if (!t) return null;
  return t.split(',').map((p) => p.trim()).filter(Boolean).map((p) => {
    const neg = p.includes('!=');
    const [k, v] = p.split(neg ? '!=' : '=');
    return { k: k.trim(), v: v === undefined ? null : v.trim(), neg };
  });
}

function matches(o, f, health) {
  if (f.kind && o.kind !== f.kind) return false;
  if (f.ns && o.ns !== f.ns) return false;
  if (f.health && health !== f.health) return false;
  if (f.label) {
    for (const { k, v, neg } of f.label) {
      const has = Object.prototype.hasOwnProperty.call(o.labels || {}, k);
      if (v === null ? !has : neg ? o.labels[k] === v : o.labels[k] !== v) return false;
    }
  }
  return true;
}

function filters() {
  return { kind: $('f-kind').value, ns: $('f-ns').value, health: $('f-health').value, label: parseLabelFilter($('f-label').value) };
}

function rootsOf(idx) {
  // each object declared in git (the status report), found live or Missing
  const roots = [];
  const seen = new Set();
  const declared = S.status ? S.status.objects : [];
  for (const d of declared) {
    const live = idx.byKindNsName.get(`${d.kind}/${d.namespace}/${d.name}`);
    const o = live || { key: `missing:${d.kind}/${d.namespace}/${d.name}`, kind: d.kind, ns: d.namespace, name: d.name,
      uid: '', labels: {}, owners: [], managed: true, path: d.path, health: d.health, why: d.message, row: [] };
    seen.add(o.key);
    roots.push([o, d]);
  }
  if (!declared.length) {
    for (const o of S.objects.values()) if (o.managed && !seen.has(o.key)) roots.push([o, null]);
  }
  roots.sort((a, b) => byKindName(a[0], b[0]));
  return roots;
}

function buildRows() {
  const idx = indices(), f = filters();
  const active = f.kind || f.ns || f.health || f.label;
  const rows = [];
  const visit = (o, report, depth, path, ancestors) => {
    const health = report ? report.health : o.health;
    const id = `${path}>${o.key}`;
    const kids = ancestors.has(o.key) || depth > 6 ? [] : childrenOf(o, idx);
    const open = S.expanded.has(id) ? S.expanded.get(id) : depth < 2;
    const mine = { o, report, depth, id, health, kids: kids.length, open };
    const at = rows.length;
    rows.push(mine);
    let kept = 0;
    if (kids.length && (open || active)) {
      const next = new Set(ancestors).add(o.key);
      for (const k of kids) visit(k, null, depth + 1, id, next);
      kept = rows.length - at - 1;
      if (!open) rows.length = at + 1;  // looked inside only to filter
    }
    if (active && !kept && !matches(o, f, health)) rows.length = at;
  };
  for (const [o, d] of rootsOf(idx)) visit(o, d, 0, '', new Set());
  S.rows = rows;
  $('tree-spacer').style.height = `${rows.length * ROW}px`;
  const n = S.objects.size;
  $('count-tree').textContent = `(${n})`;
}

function rowHTML(r) {
  const o = r.o, rep = r.report;
  const label = `${o.kind} ${nsName(o.ns, o.name)}`;
  const toggle = r.kids ? `<button type="button" class="tg" aria-expanded="${r.open}" aria-label="${r.open ? 'Collapse' : 'Expand'} ${esc(label)}">${r.open ? '▾' : '▸'}</button>` : '<span class="tg-none"></span>';
  const name = o.kind === 'Pod' && o.uid
    ? `<a class="nm" href="#/pod/${encodeURIComponent(o.ns)}/${encodeURIComponent(o.name)}">${esc(nsName(o.ns, o.name))}</a>`
    : `<span class="nm plain" tabindex="-1">${esc(nsName(o.ns, o.name))}</span>`;
  const why = rep ? rep.message : o.why;
  const status = o.kind === 'Pod' ? (o.row[2] || o.phase) : o.replicas ? `${o.replicas.ready}/${o.replicas.desired} ready`
    : o.kind === 'Secret' ? `keys: ${(o.dataKeys || []).join(', ')}` : '';
  const unhealthy = r.health && r.health !== 'Healthy';
  return `${toggle}<span class="kind" title="${esc(o.kind)}">${esc(SHORT[o.kind] || o.kind)}</span>${name}
    ${badge('h', r.health)}${rep ? badge('s', rep.sync) : ''}<span class="st">${esc(status)}</span>
    ${unhealthy && why ? `<span class="why" title="${esc(why)}">${esc(why)}</span>` : ''}
    ${rep && rep.path ? `<span class="path">${esc(rep.path)}</span>` : ''}`;
}

let renderQueued = false;
// the tree's rows are built again only when objects, filters or expansion change
function invalidate() { S.treeDirty = true; scheduleRender(); }
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  window.__gk.renders++;
  if (S.view === 'tree') {
    if (S.treeDirty) { S.treeDirty = false; buildRows(); }
    renderTree();
  }
  else if (S.view === 'nodes') renderNodes();
  else $('count-tree').textContent = `(${S.objects.size})`;
}

function renderTree() {
  const vp = $('tree'), spacer = $('tree-spacer');
  const first = Math.max(0, Math.floor(vp.scrollTop / ROW) - OVERSCAN);
  const last = Math.min(S.rows.length, Math.ceil((vp.scrollTop + vp.clientHeight) / ROW) + OVERSCAN);
  const focusId = document.activeElement && document.activeElement.closest('.row') ? document.activeElement.closest('.row').dataset.id : null;
  const focusClass = focusId ? document.activeElement.className : '';
  const keep = new Set();
  for (let i = first; i < last; i++) {
    const r = S.rows[i];
    const html = rowHTML(r);
    let el = S.rowEls.get(r.id);
    if (!el) {
      el = document.createElement('div');
      el.className = 'row';
      el.setAttribute('role', 'listitem');
      el.dataset.id = r.id;
      S.rowEls.set(r.id, el);
      vp.appendChild(el);
    }
    if (el._html !== html) {
      el.innerHTML = html;
      el._html = html;
      if (r.id === focusId) { const f = el.querySelector(`.${focusClass.split(' ')[0]}`); if (f) f.focus({ preventScroll: true }); }
    }
    el._index = i;
    el.style.transform = `translateY(${i * ROW}px)`;
    el.style.paddingLeft = `${8 + r.depth * 22}px`;
    keep.add(r.id);
  }
  for (const [id, el] of S.rowEls) {
    if (!keep.has(id)) { el.remove(); S.rowEls.delete(id); }
  }
  spacer.style.height = `${S.rows.length * ROW}px`;
  if (!window.__gk.interactiveAt && S.loaded) {
    window.__gk.interactiveAt = performance.now();
    performance.mark('gk-interactive');
  }
}

function wireTree() {
  const vp = $('tree');
  vp.addEventListener('scroll', () => scheduleRender(), { passive: true });  // rows stay, only the window moves
  vp.addEventListener('click', (ev) => {
    const t = ev.target.closest('.tg');
    if (!t) return;
    const row = t.closest('.row');
    const r = S.rows[row._index];
    S.expanded.set(r.id, !r.open);
    invalidate();
  });
  vp.addEventListener('keydown', (ev) => {
    const row = document.activeElement && document.activeElement.closest('.row');
    if (!row) {
      if (ev.key === 'ArrowDown' && S.rows.length) { ev.preventDefault(); focusRow(0); }
      return;
    }
    const i = row._index, r = S.rows[i];
    if (ev.key === 'ArrowDown') { ev.preventDefault(); focusRow(Math.min(S.rows.length - 1, i + 1)); }
    else if (ev.key === 'ArrowUp') { ev.preventDefault(); focusRow(Math.max(0, i - 1)); }
    else if ((ev.key === 'ArrowRight' && !r.open) || (ev.key === 'ArrowLeft' && r.open)) {
      if (r.kids) { ev.preventDefault(); S.expanded.set(r.id, !r.open); invalidate(); }
    }
  });
  for (const id of ['f-kind', 'f-ns', 'f-health']) $(id).addEventListener('change', invalidate);
  $('f-label').addEventListener('input', invalidate);
  $('filters').addEventListener('submit', (ev) => ev.preventDefault());
  $('f-expand').addEventListener('click', () => { for (const r of S.rows) if (r.kids) S.expanded.set(r.id, true); invalidate(); });
  $('f-collapse').addEventListener('click', () => { S.expanded.clear(); for (const r of S.rows) if (r.kids && r.depth === 0) S.expanded.set(r.id, false); invalidate(); });
}

function focusRow(i) {
  const vp = $('tree');
  const top = i * ROW;
  if (top < vp.scrollTop) vp.scrollTop = top;
  else if (top + ROW > vp.scrollTop + vp.clientHeight) vp.scrollTop = top + ROW - vp.clientHeight;
  renderTree();
  const el = S.rowEls.get(S.rows[i].id);
  if (el) (el.querySelector('.tg, a.nm, .nm') || el).focus({ preventScroll: true });
}

// ------------------------------------------------------------------ nodes

function fmtMem(b) {
  for (const [s, n] of [['Gi', 2 ** 30], ['Mi', 2 ** 20], ['Ki', 2 ** 10]]) if (b >= n) return `${(b / n).toFixed(b % n ? 1 : 0)}${s}`;
  return String(b);
}

function renderNodes() {
  const nodes = [], pods = new Map();
  for (const o of S.objects.values()) {
    if (o.kind === 'Node') nodes.push(o);
    else if (o.kind === 'Pod' && o.node) {
      let l = pods.get(o.node);
      if (!l) pods.set(o.node, l = []);
      l.push(o);
    }
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name));
  $('count-nodes').textContent = `(${nodes.length})`;
  const shown = nodes.slice(0, 300);
  const html = shown.map((n) => {
    const mine = (pods.get(n.name) || []).filter((p) => p.phase !== 'Succeeded' && p.phase !== 'Failed');
    const cpu = mine.reduce((s, p) => s + (p.cpu || 0), 0), mem = mine.reduce((s, p) => s + (p.memory || 0), 0);
    const a = n.allocatable || {};
    const pct = (x, y) => (y ? Math.min(100, Math.round((100 * x) / y)) : 0);
    const bar = (x, y, what) => `<span class="bar" role="img" aria-label="${esc(what)} ${pct(x, y)} percent"><i data-pct="${pct(x, y)}"></i></span>`;
    const list = (pods.get(n.name) || []).sort((x, y) => x.name.localeCompare(y.name));
    return `<div class="node"><h3>${esc(n.name)} ${badge('h', n.ready === 'True' ? 'Healthy' : 'Degraded')}
      <span class="note">${n.ready === 'True' ? 'Ready' : 'NotReady'}</span></h3>
      <dl class="kv"><dt>CPU</dt><dd>${bar(cpu, a.cpu, 'CPU allocated')} ${cpu}m of ${a.cpu || 0}m</dd>
      <dt>Memory</dt><dd>${bar(mem, a.memory, 'memory allocated')} ${fmtMem(mem)} of ${fmtMem(a.memory || 0)}</dd>
      <dt>Pods</dt><dd>${bar(mine.length, a.pods, 'pods')} ${mine.length} of ${a.pods || 0}</dd>
      <dt>Capacity</dt><dd>${esc(Object.entries(n.capacity || {}).map(([k, v]) => `${k}=${v}`).join(', '))}</dd></dl>
      <div class="pods">${list.slice(0, 100).map((p) => `<a href="#/pod/${encodeURIComponent(p.ns)}/${encodeURIComponent(p.name)}">${esc(nsName(p.ns, p.name))}</a>${badge('h', p.health)}`).join(' ')}
      ${list.length > 100 ? `<span class="note">and ${list.length - 100} more</span>` : ''}</div></div>`;
  }).join('');
  const more = nodes.length > shown.length ? `<p class="note">${nodes.length - shown.length} more nodes not shown</p>` : '';
  const target = $('nodes');
  const next = (html || '<p class="note">no nodes</p>') + more;
  if (target._html !== next) {
    target.innerHTML = next;
    target._html = next;
    for (const i of target.querySelectorAll('.bar i')) i.style.width = `${i.dataset.pct}%`;  // CSSOM: allowed by the CSP
  }
}

// ------------------------------------------------------------------ pod detail and log

let logSource = null;
async function showPod(ns, name) {
  S.pod = [ns, name];
  $('h-pod').textContent = `Pod ${ns}/${name}`;
  await refreshPod(true);
}

function probeText(p) {
  if (!p) return '—';
  const h = p.httpGet, t = p.tcpSocket, e = p.exec;
  const what = h ? `GET ${h.path || '/'} port ${h.port}` : t ? `TCP port ${t.port}` : e ? `exec ${(e.command || []).join(' ')}` : '?';
  return `${what} every ${p.periodSeconds || 10}s`;
}

function stateText(s) {
  if (!s) return '';
  if (s.running) return `Running since ${s.running.startedAt || '?'}`;
  if (s.waiting) return `Waiting: ${s.waiting.reason || ''} ${s.waiting.message || ''}`;
  if (s.terminated) return `Terminated: ${s.terminated.reason || ''} (exit ${s.terminated.exitCode || 0}) ${s.terminated.message || ''}`;
  return '';
}

async function refreshPod(openLog) {
  if (!S.pod) return;
  const [ns, name] = S.pod;
  let data;
  try { data = await getJSON(`/ui/api/pods/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`); } catch (e) {
    $('pod').innerHTML = `<p class="err">${esc(e.message)}</p>`;
    return;
  }
  const pod = data.pod, spec = pod.spec || {}, st = pod.status || {};
  const statuses = new Map((st.containerStatuses || []).map((c) => [c.name, c]));
  const rows = (spec.containers || []).map((c) => {
    const s = statuses.get(c.name) || {};
    return `<tr><td>${esc(c.name)}</td><td>${esc(c.image)}</td><td>${esc(stateText(s.state))}</td><td>${s.ready ? 'yes' : 'no'}</td>
      <td>${s.restartCount || 0}</td><td>${esc(stateText(s.lastState))}</td><td>${esc(probeText(c.readinessProbe))}</td><td>${esc(probeText(c.livenessProbe))}</td></tr>`;
  }).join('');
  const events = (data.events || []).map((e) => `<tr><td>${esc(e.lastTimestamp)}</td><td>${esc(e.type)}</td><td>${esc(e.reason)}</td>
    <td>${esc(e.count)}</td><td>${esc(e.message)}</td></tr>`).join('');
  $('pod').innerHTML = `<dl class="kv"><dt>Phase</dt><dd>${esc(st.phase)} ${badge('h', data.health.status)} ${esc(data.health.message)}</dd>
    <dt>Node</dt><dd>${esc(spec.nodeName || '—')}</dd><dt>IP</dt><dd>${esc(st.podIP || st.hostIP || '—')}</dd>
    <dt>Source</dt><dd>${esc((pod.metadata.annotations || {})['gitkube.io/source-path'] || '—')}</dd></dl>
    <h3>Containers</h3><table><thead><tr><th scope="col">Name</th><th scope="col">Image</th><th scope="col">State</th><th scope="col">Ready</th>
    <th scope="col">Restarts</th><th scope="col">Last state</th><th scope="col">Readiness probe</th><th scope="col">Liveness probe</th></tr></thead>
    <tbody>${rows}</tbody></table>
    <h3>Events</h3>${events ? `<table><thead><tr><th scope="col">Last seen</th><th scope="col">Type</th><th scope="col">Reason</th>
    <th scope="col">Count</th><th scope="col">Message</th></tr></thead><tbody>${events}</tbody></table>` : '<p class="note">no events</p>'}`;
  const sel = $('log-container');
  const names = (spec.containers || []).map((c) => c.name);
  if ([...sel.options].map((o) => o.value).join() !== names.join()) {
    sel.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join('');
  }
  if (openLog) followLog();
}

function followLog() {
  if (logSource) logSource.close();
  const [ns, name] = S.pod;
  const pre = $('log');
  pre.textContent = '';
  const url = `/ui/api/pods/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/log?container=${encodeURIComponent($('log-container').value)}`;
  const src = logSource = new EventSource(url);
  src.addEventListener('where', (ev) => { $('log-where').textContent = JSON.parse(ev.data).where; });
  src.addEventListener('lines', (ev) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(JSON.parse(ev.data).join('\n') + '\n'));
    while (pre.childNodes.length > LOG_LINES) pre.removeChild(pre.firstChild);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  src.addEventListener('fail', (ev) => { $('log-where').textContent = JSON.parse(ev.data).message; src.close(); });
  src.addEventListener('end', () => { $('log-where').textContent += ' (ended)'; src.close(); });
}

function closeLog() { if (logSource) { logSource.close(); logSource = null; } }

// ------------------------------------------------------------------ live updates

let pending = [];
function applyEvent(kind, data) {
  if (kind === 'put') {
    if (data.rev && data.rev <= S.rev && S.objects.has(data.o.key)) return;
    S.objects.set(data.o.key, data.o);
    if (S.pod && data.o.kind === 'Pod' && data.o.ns === S.pod[0] && data.o.name === S.pod[1]) schedulePod();
  } else if (kind === 'del') {
    S.objects.delete(data.key);
  }
  S.idx = null;
  window.__gk.updates++;
  invalidate();
  // the health of git's objects comes from the status report: read it again soon
  // (less often in a big cluster, where building it takes longer)
  scheduleStatus(S.objects.size > 2000 ? 1500 : 400);
}

let podTimer = 0;
function schedulePod() { clearTimeout(podTimer); podTimer = setTimeout(() => refreshPod(false), 200); }

async function loadObjects() {
  const data = await getJSON('/ui/api/objects');
  S.objects = new Map(data.objects.map((o) => [o.key, o]));
  S.headers = data.headers;
  S.rev = data.revision;
  S.idx = null;
  S.loaded = true;
  const later = pending.filter(([, d]) => !d.rev || d.rev > S.rev);
  pending = null;
  for (const [k, d] of later) applyEvent(k, d);
  invalidate();
}

function connect() {
  pending = [];
  const src = new EventSource('/ui/api/watch');
  const on = (kind) => src.addEventListener(kind, (ev) => {
    const d = JSON.parse(ev.data);
    if (pending) pending.push([kind, d]); else applyEvent(kind, d);
  });
  on('put');
  on('del');
  src.addEventListener('status', () => { scheduleStatus(); if (S.view === 'drift') renderDrift(); });
  src.addEventListener('hello', () => {
    // (re)connected: read everything again, then apply what arrives meanwhile
    if (!pending) pending = [];
    loadObjects().catch((e) => toast(e.message));
    scheduleStatus(0);
  });
  src.addEventListener('relist', () => { pending = []; loadObjects().catch((e) => toast(e.message)); });
}

// ------------------------------------------------------------------ views

function route() {
  const parts = (location.hash || '#/overview').slice(2).split('/');
  let view = parts[0] || 'overview';
  if (!$(`view-${view}`)) view = 'overview';
  S.view = view;
  for (const sec of document.querySelectorAll('.view')) sec.hidden = sec.id !== `view-${view}`;
  for (const a of document.querySelectorAll('.tabs a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (view === 'pod') showPod(decodeURIComponent(parts[1] || 'default'), decodeURIComponent(parts[2] || ''));
  else { S.pod = null; closeLog(); }
  if (view === 'history') renderHistory();
  if (view === 'drift') renderDrift();
  if (view === 'overview' && S.status) renderOverview();
  invalidate();
}

async function start() {
  wireActions();
  wireTree();
  $('log-container').addEventListener('change', followLog);
  window.addEventListener('hashchange', route);
  route();
  connect();
  await Promise.all([loadSession(), loadStatus()]);
  renderDrift();
}

document.addEventListener('DOMContentLoaded', () => { start().catch((e) => toast(e.message)); });
