// sockmesh dashboard: renders each DashboardSnapshot (dashboard/model.ts) pushed on /api/events.
// Plain DOM and SVG, no framework, nothing loaded from elsewhere.

const SVG = 'http://www.w3.org/2000/svg';
const W = 900;
const BOX = { w: 190, h: 44 };

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function health(success, e) {
  if (success === null) return 'idle-c';
  if (e && e.denied * 2 > e.requests) return 'bad';
  if (success >= 0.99) return 'ok';
  if (success >= 0.95) return 'warn';
  return 'bad';
}

function fmtRate(r) {
  return r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

function fmtMs(v) {
  if (v === null) return '-';
  if (v === Infinity || v > 1e12) return '>max';
  return `${v}ms`;
}

/** The edge's label: traffic, and on a second line the kernel's TCP view of the pair when exported. */
function edgeLabel(e) {
  if (e.requests === 0) return ['idle', null];
  // Success is non-5xx (Istio's reading); a denial is a 403, shown as such rather than as a success.
  const outcome =
    e.denied > 0
      ? `${Math.round((100 * e.denied) / e.requests)}% denied`
      : `${(100 * e.success).toFixed(1)}% ok`;
  const traffic = [`${fmtRate(e.rps)}/s`, outcome, `p99 ${fmtMs(e.p99Ms)}`].join(' · ');
  const tcp = e.tcp
    ? `rtt ${(e.tcp.srttUs / 1000).toFixed(2)}ms ±${(e.tcp.rttvarUs / 1000).toFixed(2)} · retransmits ${e.tcp.retransmits} · rtos ${e.tcp.rtos}`
    : null;
  return [traffic, tcp];
}

/** Columns: one per node, then the workloads outside the mesh. */
function layout(snapshot) {
  const nodes = [...new Set(snapshot.agents.map((a) => a.node))].sort();
  const columns = nodes.map((n) => ({ label: n, items: snapshot.workloads.filter((w) => w.node === n) }));
  const outside = snapshot.workloads.filter((w) => w.node === null || !nodes.includes(w.node));
  if (outside.length) columns.push({ label: 'outside the mesh', items: outside });
  const pos = new Map();
  const colW = W / columns.length;
  let height = 0;
  columns.forEach((c, i) => {
    c.x = colW * i + colW / 2;
    c.items.forEach((w, j) => {
      const y = 50 + j * 130 + (i % 2) * 65;
      pos.set(w.id, { x: c.x, y });
      height = Math.max(height, y + BOX.h);
    });
  });
  return { columns, pos, height: Math.max(height + 30, 240) };
}

function renderGraph(snapshot) {
  const svg = document.getElementById('graph');
  const { columns, pos, height } = layout(snapshot);
  svg.setAttribute('viewBox', `0 0 ${W} ${height}`);
  svg.replaceChildren();
  const defs = el('defs');
  for (const c of ['ok', 'warn', 'bad', 'idle-c']) {
    const m = el('marker', {
      id: `arrow-${c}`,
      viewBox: '0 0 10 10',
      refX: 9,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      orient: 'auto-start-reverse',
    });
    m.append(el('path', { d: 'M0,0 L10,5 L0,10 z', class: c }));
    defs.append(m);
  }
  svg.append(defs);
  for (const c of columns)
    svg.append(el('text', { x: c.x, y: 24, 'text-anchor': 'middle', class: 'column-label' }, c.label));

  const edges = el('g');
  const fanOut = new Map();
  for (const e of snapshot.edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.destination);
    if (!a || !b) continue;
    const cls = e.requests === 0 ? 'idle-c' : health(e.success, e);
    const g = el('g', {
      class: `edge${e.requests === 0 ? ' idle' : ''}`,
      'data-source': e.source,
      'data-destination': e.destination,
    });
    // From the facing sides of the two boxes; a bend keeps A->B and B->A apart. Within a column
    // the curve bulges towards the middle of the picture.
    const sameColumn = a.x === b.x;
    const dir = sameColumn ? 1 : Math.sign(b.x - a.x);
    const inward = a.x < W / 2 ? 1 : -1;
    const x1 = sameColumn ? a.x + (inward * BOX.w) / 2 : a.x + (dir * BOX.w) / 2;
    const x2 = sameColumn ? b.x + (inward * BOX.w) / 2 : b.x - (dir * BOX.w) / 2;
    const y1 = a.y + BOX.h / 2;
    const y2 = b.y + BOX.h / 2;
    const cx = sameColumn ? a.x + inward * BOX.w * 0.95 : (x1 + x2) / 2;
    const cy = (y1 + y2) / 2 - (sameColumn ? 0 : 40 * dir);
    g.append(
      el('path', {
        d: `M${x1},${y1} Q${cx},${cy} ${x2},${y2}`,
        class: cls,
        'marker-end': `url(#arrow-${cls})`,
      }),
    );
    // Labels of one caller's edges sit at different points along their curves, so they do not pile up.
    const k = fanOut.get(e.source) ?? 0;
    fanOut.set(e.source, k + 1);
    const t = sameColumn ? 0.5 : [0.5, 0.3, 0.7][k % 3];
    const mx = (1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t ** 2 * x2;
    const my = (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t ** 2 * y2;
    // A numbered badge on the curve; the figures are in the table under the graph (no labels piling up).
    const n = snapshot.edges.indexOf(e) + 1;
    g.append(el('circle', { cx: mx, cy: my, r: 9, class: `badge-dot ${cls}` }));
    g.append(el('text', { x: mx, y: my + 4, 'text-anchor': 'middle', class: 'badge-num' }, String(n)));
    const title = el('title', {}, `${e.source} -> ${e.destination}: ${e.requests} requests in the window`);
    g.append(title);
    edges.append(g);
  }
  for (const w of snapshot.workloads) {
    const p = pos.get(w.id);
    const g = el('g', {
      class: `node${w.meshed ? '' : ' outside'}`,
      'data-workload': w.id,
      transform: `translate(${p.x - BOX.w / 2},${p.y})`,
    });
    g.append(el('rect', { width: BOX.w, height: BOX.h }));
    g.append(el('text', { x: 10, y: 17 }, w.id));
    g.append(
      el(
        'text',
        { x: 10, y: 33, class: 'sub' },
        w.meshed
          ? `mTLS ${w.mtls || 'strict'} · ${w.spiffeId ? w.spiffeId.replace(/^spiffe:\/\/[^/]+\//, '') : ''}`
          : 'no identity',
      ),
    );
    svg.append(g);
  }
  svg.append(edges);
}

function renderEdgeTable(snapshot) {
  const body = document.querySelector('#edges tbody');
  body.replaceChildren();
  snapshot.edges.forEach((e, i) => {
    const [traffic, tcp] = edgeLabel(e);
    const tr = document.createElement('tr');
    tr.className = `edge-row ${e.requests === 0 ? 'idle-c' : health(e.success, e)}`;
    tr.dataset.source = e.source;
    tr.dataset.destination = e.destination;
    for (const [cls, v] of [
      ['num', String(i + 1)],
      ['pair', `${e.source} → ${e.destination}`],
      ['traffic', traffic],
      ['tcp', tcp ?? (e.requests === 0 ? '' : '-')],
    ]) {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = v;
      tr.append(td);
    }
    body.append(tr);
  });
}

function renderSplits(snapshot) {
  const box = document.getElementById('splits');
  if (!snapshot.splits.length) {
    box.innerHTML = '<p class="muted">no weighted route</p>';
    return;
  }
  box.replaceChildren();
  for (const s of snapshot.splits) {
    const div = document.createElement('div');
    div.className = 'split';
    div.dataset.route = `${s.httpRoute}#${s.rule}`;
    const title = document.createElement('div');
    title.className = 'title';
    title.innerHTML = `<strong></strong>`;
    // Named as `sockmesh canary` and `sockmesh explain` name it: a GRPCRoute says so.
    const route = s.routeKind === 'GRPCRoute' ? `${s.httpRoute} (GRPCRoute)` : s.httpRoute;
    title.firstChild.textContent = `${route} rule ${s.rule}`;
    if (s.guard) {
      const b = document.createElement('span');
      b.className = `badge ${s.guard.phase}`;
      b.dataset.guard = s.guard.phase;
      const phase =
        { Progressing: 'progressing', Promoted: 'promoted', RolledBack: 'rolled back' }[s.guard.phase] ||
        s.guard.phase;
      b.textContent = `guard: ${phase} · canary ${s.guard.weight}% (written ${s.guard.writtenWeight}%)`;
      title.append(b);
    }
    div.append(title);
    const bars = [
      ['served weight', (b) => b.weight],
      ['live share', (b) => b.share ?? 0],
    ];
    for (const [label, get] of bars) {
      const row = document.createElement('div');
      row.className = 'barrow';
      const caption = document.createElement('span');
      caption.textContent = label;
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.title = label;
      row.append(caption, bar);
      for (const b of s.backends) {
        const span = document.createElement('span');
        span.style.width = `${get(b)}%`;
        bar.append(span);
      }
      div.append(row);
    }
    const t = document.createElement('table');
    t.innerHTML =
      '<tr class="muted"><td>backend</td><td>weight</td><td>live share</td><td>requests</td></tr>';
    for (const b of s.backends) {
      const tr = document.createElement('tr');
      tr.dataset.backend = b.service;
      for (const [cls, v] of [
        ['service', b.service],
        ['weight', `${b.weight}%`],
        ['share', b.share === null ? '-' : `${b.share}%`],
        ['requests', String(b.requests)],
      ]) {
        const td = document.createElement('td');
        td.className = cls;
        td.textContent = v;
        tr.append(td);
      }
      t.append(tr);
    }
    div.append(t);
    if (s.guard?.message) {
      const p = document.createElement('div');
      p.className = 'guard-msg';
      p.textContent = s.guard.message;
      div.append(p);
    }
    box.append(div);
  }
}

function renderDenials(snapshot) {
  const body = document.querySelector('#denials tbody');
  if (!snapshot.denials.length) {
    body.innerHTML = '<tr><td colspan="5" class="muted">none seen</td></tr>';
    return;
  }
  body.replaceChildren();
  for (const d of snapshot.denials) {
    const tr = document.createElement('tr');
    for (const v of [
      d.at.slice(11, 19),
      d.source.replace(/^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\//, '$1/'),
      d.destination,
      d.policy,
      String(d.count),
    ]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    body.append(tr);
  }
}

function render(snapshot) {
  const up = snapshot.agents.filter((a) => a.up).length;
  document.getElementById('status').textContent =
    `config version ${snapshot.version ?? '?'} · ${up}/${snapshot.agents.length} agents answering · updated ${snapshot.at.slice(11, 19)} UTC`;
  document.getElementById('window').textContent = `(last ${snapshot.windowSeconds}s)`;
  renderGraph(snapshot);
  renderEdgeTable(snapshot);
  renderSplits(snapshot);
  renderDenials(snapshot);
  document.body.dataset.updated = snapshot.at;
}

const events = new EventSource('/api/events');
events.onmessage = (m) => render(JSON.parse(m.data));
events.onerror = () => {
  document.getElementById('status').textContent = 'disconnected; retrying…';
};
