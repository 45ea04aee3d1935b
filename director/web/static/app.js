/* fedplane console: reads the director's /api and follows /api/events.
 * Plain JavaScript, no libraries; every text from the director goes into
 * the page as text (textContent), never as markup. Charts are inline SVG. */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  // The SVG namespace, read from the page's own <svg> element.
  const SVGNS = $('svg-ns').namespaceURI;

  const state = {
    lastSeq: 0,
    envoys: [],
    envoyTotal: 0,
    jobs: [],
    // The open job: its detail and its series, metric key -> Map(round -> value).
    jobId: null,
    job: null,
    series: new Map(),
  };

  // ---- DOM helpers -------------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const k of kids) {
      if (k === null || k === undefined) continue;
      e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function showError(msg) {
    const e = $('error');
    e.textContent = msg;
    e.hidden = !msg;
  }

  // ---- formatting ----------------------------------------------------------

  function short(id) { return (id || '').slice(0, 8); }

  function fmtNum(v) {
    if (typeof v !== 'number' || !isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    return String(Number(v.toPrecision(5)));
  }

  function fmtTime(s) {
    if (!s) return '-';
    const t = new Date(s);
    if (isNaN(t) || t.getFullYear() < 2000) return '-';
    const now = new Date();
    const same = t.toDateString() === now.toDateString();
    return same ? t.toLocaleTimeString() : t.toLocaleString();
  }

  function ago(s) {
    if (!s) return '-';
    const t = new Date(s);
    if (isNaN(t) || t.getFullYear() < 2000) return 'never';
    const sec = Math.max(0, Math.round((Date.now() - t.getTime()) / 1000));
    if (sec < 60) return sec + ' s ago';
    if (sec < 3600) return Math.round(sec / 60) + ' min ago';
    if (sec < 86400) return Math.round(sec / 3600) + ' h ago';
    return t.toLocaleDateString();
  }

  function statusText(s) { return (s || '').replace('_', ' '); }

  // ---- API -----------------------------------------------------------------

  async function get(path) {
    const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401 || r.status === 403) {
      // The session ended (a restart, or 12 h passed): the page says how
      // to log in again.
      location.reload();
      throw new Error('not logged in');
    }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || (r.status + ' ' + r.statusText));
    return body;
  }

  // debounce runs f once, a little after the last of a burst of calls.
  function debounce(f, ms) {
    let t = null;
    return (...args) => {
      clearTimeout(t);
      t = setTimeout(() => f(...args), ms);
    };
  }

  // ---- envoys --------------------------------------------------------------

  async function loadEnvoys() {
    const r = await get('/api/envoys');
    state.envoys = r.envoys || [];
    state.envoyTotal = r.total || 0;
    renderEnvoys();
  }

  function renderEnvoys() {
    const tbody = $('envoys').tBodies[0];
    const rows = state.envoys.map((e) => {
      const tr = el('tr', { 'data-envoy': e.name, class: e.online ? 'online' : 'offline' },
        el('td', null, el('strong', null, e.name)),
        el('td', null, el('span', { class: e.online ? 'dot on' : 'dot' }), e.online ? 'online' : 'offline'),
        el('td', { title: fmtTime(e.lastSeen), class: 'muted' }, ago(e.lastSeen)),
        el('td', { class: 'shard', title: e.shard || '' }, e.shard || '-'),
        el('td', { class: 'num' }, e.samples),
        el('td', null, e.gpu || '-'),
        el('td', null, e.experiment ? jobLink(e.experiment) : el('span', { class: 'muted' }, 'idle')));
      return tr;
    });
    tbody.replaceChildren(...rows);
    $('envoys-empty').hidden = rows.length > 0;
    const online = state.envoys.filter((e) => e.online).length;
    let count = online + ' of ' + state.envoys.length + ' online';
    if (state.envoyTotal > state.envoys.length) count += ' (first ' + state.envoys.length + ' of ' + state.envoyTotal + ')';
    $('envoy-count').textContent = count;
  }

  function jobLink(id) {
    return el('a', { href: '#/job/' + encodeURIComponent(id), class: 'mono' }, short(id));
  }

  // ---- jobs ----------------------------------------------------------------

  async function loadJobs() {
    const r = await get('/api/jobs');
    state.jobs = r.jobs || [];
    renderJobs(r.more);
  }

  function progress(j, big) {
    const total = j.rounds || 0;
    let done = j.roundsDone || 0;
    if (j.status === 'finished' && total) done = total;
    const p = el('div', { class: 'progress' + (big ? ' big' : '') + (j.status === 'finished' ? ' done' : '') +
      (j.status === 'failed' || j.status === 'aborted' ? ' failed' : ''), title: done + ' of ' + total + ' rounds done' });
    const bar = el('div', { class: 'bar' });
    // CSSOM, which the page's Content-Security-Policy allows (a style attribute it would not).
    bar.style.width = (total ? Math.min(100, 100 * done / total) : 0) + '%';
    p.append(bar, el('span', { class: 'label' }, total ? done + ' / ' + total + ' rounds' : '-'));
    return p;
  }

  function badge(status) {
    return el('span', { class: 'badge ' + status }, statusText(status));
  }

  function renderJobs(more) {
    const tbody = $('jobs').tBodies[0];
    const rows = state.jobs.map((j) => {
      const tr = el('tr', { 'data-job': j.job_id },
        el('td', null, jobLink(j.job_id)),
        el('td', null, el('strong', null, j.name)),
        el('td', null, badge(j.status)),
        el('td', null, progress(j, false)),
        el('td', null, j.submitter || '-'),
        el('td', { class: 'muted', title: fmtTime(j.submitTime) }, ago(j.submitTime)),
        el('td', { class: 'reason' }, j.reason || ''));
      tr.addEventListener('click', (ev) => {
        if (ev.target.closest('a')) return;
        location.hash = '#/job/' + encodeURIComponent(j.job_id);
      });
      return tr;
    });
    tbody.replaceChildren(...rows);
    $('jobs-empty').hidden = rows.length > 0;
    const running = state.jobs.filter((j) => j.status === 'in_progress').length;
    const n = state.jobs.length;
    $('job-count').textContent = n + (more ? '+' : '') + (n === 1 ? ' job, ' : ' jobs, ') + running + ' running';
  }

  // ---- one job ---------------------------------------------------------------

  async function openJob(id) {
    if (state.jobId !== id) {
      state.jobId = id;
      state.job = null;
      state.series = new Map();
      $('charts').replaceChildren();
      $('d-title').textContent = short(id);
    }
    const r = await get('/api/jobs/' + encodeURIComponent(id));
    if (state.jobId !== id) return; // navigated away meanwhile
    state.job = r.job;
    // Merge, not replace: a round that an event added while this was on
    // its way stays.
    for (const m of r.metrics || []) addPoint(m.key, m.round, m.value, false);
    renderJobHead();
    renderAllCharts();
  }

  // refreshJobHead reloads the open job's status and envoys, not its charts,
  // which events extend point by point.
  async function refreshJobHead() {
    const id = state.jobId;
    if (!id) return;
    const r = await get('/api/jobs/' + encodeURIComponent(id));
    if (state.jobId !== id) return;
    state.job = r.job;
    renderJobHead();
    for (const m of r.metrics || []) addPoint(m.key, m.round, m.value, true);
  }

  function renderJobHead() {
    const j = state.job;
    if (!j) return;
    $('d-title').textContent = j.name + ' ';
    $('d-title').append(el('span', { class: 'mono muted' }, j.job_id));
    $('d-status').replaceWith(Object.assign(badge(j.status), { id: 'd-status' }));
    const facts = [
      ['Submitter', (j.submitter || '-') + (j.submitterRole ? ' (' + j.submitterRole + ')' : '')],
      ['Submitted', fmtTime(j.submitTime)],
      ['Started', fmtTime(j.startTime)],
      ['Ended', fmtTime(j.endTime)],
      ['Duration', j.duration || '-'],
      ['Archive', j.archiveSize ? (j.archiveSize / 1024).toFixed(1) + ' KiB' : '-'],
    ];
    $('d-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
    $('d-progress').replaceWith(Object.assign(progress(j, true), { id: 'd-progress' }));
    const reason = $('d-reason');
    reason.textContent = j.reason || '';
    reason.hidden = !j.reason;
    reason.className = 'note' + (j.status === 'failed' ? ' bad' : '');

    const envoys = j.envoys || [];
    $('d-envoys').tBodies[0].replaceChildren(...envoys.map((p) => el('tr', null,
      el('td', null, el('strong', null, p.name)),
      el('td', null, badge(p.status)),
      el('td', { class: 'num' }, p.round),
      el('td', { class: 'muted', title: fmtTime(p.updated) }, ago(p.updated)),
      el('td', { class: 'reason' }, p.reason || ''))));
    $('d-envoys-empty').hidden = envoys.length > 0;
  }

  // addPoint records a metric's value at a round done; draw redraws its chart.
  function addPoint(key, round, value, draw) {
    let s = state.series.get(key);
    if (!s) {
      s = new Map();
      state.series.set(key, s);
    }
    if (s.has(round) && s.get(round) === value) return;
    s.set(round, value);
    if (draw) drawChart(key);
  }

  function renderAllCharts() {
    const keys = [...state.series.keys()].sort();
    for (const k of keys) drawChart(k);
    $('charts-empty').hidden = keys.length > 0;
  }

  function chartFigure(key) {
    const box = $('charts');
    for (const f of box.children) {
      if (f.dataset.metric === key) return f;
    }
    const f = el('figure', { class: 'chart', 'data-metric': key });
    // Keep the charts in key order.
    const after = [...box.children].find((c) => c.dataset.metric > key);
    box.insertBefore(f, after || null);
    $('charts-empty').hidden = true;
    return f;
  }

  // Chart geometry, in SVG user units.
  const W = 340, H = 180, L = 52, R = 14, T = 12, B = 32;

  function drawChart(key) {
    const s = state.series.get(key);
    const pts = [...s.entries()].map(([round, value]) => ({ round, value })).sort((a, b) => a.round - b.round);
    const total = (state.job && state.job.rounds) || 0;
    const xmin = 1;
    const xmax = Math.max(total, pts.length ? pts[pts.length - 1].round : 1, 2);
    // The axis is labelled with the values' min and max; the scale has a
    // margin around them, and around a flat series.
    const vmin = Math.min(...pts.map((p) => p.value));
    const vmax = Math.max(...pts.map((p) => p.value));
    const pad = vmin === vmax ? (Math.abs(vmin) * 0.1 || 1) : (vmax - vmin) * 0.08;
    const ymin = vmin - pad, ymax = vmax + pad;
    const x = (r) => L + (r - xmin) / (xmax - xmin) * (W - L - R);
    const y = (v) => T + (1 - (v - ymin) / (ymax - ymin)) * (H - T - B);

    const g = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': key + ' per round' });
    const levels = vmin === vmax ? [vmin] : [vmin, vmax];
    for (const v of levels) {
      g.append(
        svg('line', { class: 'gridline', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        svg('text', { class: 'tick', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtNum(v)));
    }
    g.append(
      svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }),
      svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
      svg('text', { class: 'tick', x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle' }, 'round'));
    // Every round is labelled while they fit, else the first and the last.
    const step = xmax - xmin <= 12 ? 1 : xmax - xmin;
    for (let r = xmin; r <= xmax; r += step) {
      g.append(
        svg('line', { class: 'axis', x1: x(r), x2: x(r), y1: H - B, y2: H - B + 4 }),
        svg('text', { class: 'tick', x: x(r), y: H - B + 15, 'text-anchor': 'middle' }, String(r)));
    }
    if (pts.length > 1) {
      g.append(svg('polyline', { class: 'line', points: pts.map((p) => x(p.round) + ',' + y(p.value)).join(' ') }));
    }
    for (const p of pts) {
      const c = svg('circle', { class: 'pt', cx: x(p.round), cy: y(p.value), r: 4, 'data-round': p.round, 'data-value': p.value });
      c.append(svg('title', null, key + ', round ' + p.round + ': ' + fmtNum(p.value)));
      g.append(c);
    }
    const last = pts.length ? pts[pts.length - 1] : null;
    const f = chartFigure(key);
    f.replaceChildren(
      el('figcaption', null, el('span', null, key),
        el('span', { class: 'last' }, last ? 'round ' + last.round + ': ' + fmtNum(last.value) : '')),
      g);
  }

  // ---- events ----------------------------------------------------------------

  const refreshEnvoys = debounce(() => loadEnvoys().catch((e) => showError(e.message)), 150);
  const refreshJobs = debounce(() => loadJobs().catch((e) => showError(e.message)), 150);
  const refreshDetail = debounce(() => refreshJobHead().catch((e) => showError(e.message)), 150);

  function apply(ev) {
    state.lastSeq = Math.max(state.lastSeq, ev.seq || 0);
    const kind = ev.kind || '';
    if (kind.startsWith('envoy.')) {
      refreshEnvoys();
      return;
    }
    if (!kind.startsWith('job.')) return;
    refreshJobs();
    refreshEnvoys(); // which job an envoy works on
    if (ev.job !== state.jobId) return;
    if (kind === 'job.round') {
      if (state.job) state.job.roundsDone = Math.max(state.job.roundsDone || 0, ev.round);
      for (const [key, value] of Object.entries(ev.metrics || {})) addPoint(key, ev.round, value, true);
      $('charts-empty').hidden = state.series.size > 0;
    }
    refreshDetail();
  }

  function follow() {
    const live = $('live');
    const es = new EventSource('/api/events?after=' + state.lastSeq);
    es.onopen = () => {
      live.textContent = 'live';
      live.className = 'live on';
      showError('');
    };
    es.onmessage = (m) => {
      try {
        apply(JSON.parse(m.data));
      } catch (e) {
        showError('bad event: ' + e.message);
      }
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        live.textContent = 'disconnected';
        live.className = 'live off';
        showError('The event stream ended: reload the page (after a director restart, run fladmin console for a new link).');
      } else {
        live.textContent = 'reconnecting';
        live.className = 'live';
      }
    };
  }

  // ---- routing and start -------------------------------------------------------

  function route() {
    const m = location.hash.match(/^#\/job\/([0-9a-f-]{8,36})$/);
    $('overview').hidden = !!m;
    $('detail').hidden = !m;
    if (m) {
      openJob(m[1]).catch((e) => showError(e.message));
    } else {
      state.jobId = null;
    }
  }

  async function start() {
    const me = await get('/api/whoami');
    state.lastSeq = me.lastSeq || 0;
    $('version').textContent = 'director ' + me.version;
    $('who').replaceChildren(me.name + (me.org ? ' @ ' + me.org : ''), el('span', { class: 'role' }, me.role));
    await Promise.all([loadEnvoys(), loadJobs()]);
    window.addEventListener('hashchange', route);
    route();
    follow();
    // Last-seen times move without events: re-read the envoys now and then.
    setInterval(() => loadEnvoys().catch(() => {}), 10000);
  }

  start().catch((e) => showError(e.message));
})();
