// The console: header with the site colour, risk map, alarm panel, points, a point's trend and
// the hazard-ticket board. Plain modules, no build step. Live changes arrive over the event
// stream and touch only what they change.

import { ApiError, get, post, setToken, subscribe, token } from './api.js';
import { applyStatic, language, setLanguage, t } from './i18n.js';
import { applyStatus, drawMap, relabel } from './map.js';
import { Trend } from './trend.js';

const $ = id => document.getElementById(id);
const ROLES = ['viewer', 'operator', 'admin'];
const state = { role: null, name: null, status: null, alarms: new Map(), points: [], filtered: [], pointIndex: new Map(), unsubscribe: null };

const canOperate = () => ROLES.indexOf(state.role) >= 1;
const fmtTime = iso => (iso ? new Date(iso).toLocaleTimeString() : '');
const QUALITY_UNCERTAIN = new Set(['stale', 'saturated', 'not_measuring']);
const qualityClass = q => (q === 'good' || q === 'no_data' ? '' : QUALITY_UNCERTAIN.has(q) ? 'q-uncertain' : 'q-bad');

function toast(msg) {
  const el = $('toast');
  el.textContent = msg;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3000);
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text ?? '';
  if (cls) td.className = cls;
  return td;
}

// ------------------------------------------------------------------ sign-in ---

async function boot() {
  applyStatic();
  $('lang').addEventListener('click', () => { setLanguage(language() === 'zh' ? 'en' : 'zh'); rerenderTexts(); });
  $('logout').addEventListener('click', () => { setToken(''); location.reload(); });
  $('login-form').addEventListener('submit', async e => {
    e.preventDefault();
    setToken($('token').value.trim());
    $('login-error').textContent = '';
    await signIn();
  });
  window.addEventListener('hashchange', route);
  await signIn();
}

async function signIn() {
  try {
    const who = await get('/api/v1/whoami');
    state.role = who.role;
    state.name = who.name;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      if (token()) $('login-error').textContent = t(e.status === 401 ? 'login.bad' : 'login.forbidden');
      setToken('');
      $('login').hidden = false;
      for (const v of document.querySelectorAll('.view')) v.hidden = true;
      return;
    }
    toast(e.message);
    setTimeout(signIn, 3000);
    return;
  }
  $('login').hidden = true;
  $('logout').hidden = !token();
  $('who').textContent = `${state.name} · ${t(`role.${state.role}`)}`;
  document.body.dataset.role = state.role;
  for (const el of document.querySelectorAll('.operator-only')) el.hidden = !canOperate();
  await start();
}

// ------------------------------------------------------------- site and live ---

async function start() {
  const [risk] = await Promise.all([get('/api/v1/risk'), loadAlarms()]);
  showStatus(risk);
  await drawMap($('map'), risk);
  state.unsubscribe = subscribe(
    {
      status: s => { showStatus(s); applyStatus(s); },
      alarm: onAlarmEvent,
      risk_colour: c => { if (c.unit !== 'site') applyStatus({ units: [{ id: c.unit, colour: c.to }] }); },
      ticket: () => { if (current() === 'tickets') loadTickets(); },
      comment: c => toast(`${c.point}: ${c.comment} (${c.by})`),
      lagged: () => resync(),
      unauthorized: () => { setToken(''); location.reload(); },
    },
    s => { const el = $('live'); el.dataset.state = s; el.textContent = t(`live.${s}`); },
    resync,
  );
  route();
}

async function resync() {
  try {
    const risk = await get('/api/v1/risk');
    showStatus(risk);
    applyStatus(risk);
    await loadAlarms();
  } catch (e) { toast(e.message); }
}

function showStatus(s) {
  state.status = s;
  const badge = $('site-colour');
  badge.dataset.colour = s.colour;
  badge.textContent = t(`colour.${s.colour}`);
  $('site-name').textContent = s.name;
  document.title = `${s.name} · Sentinel`;
  const active = (s.active_alarms || []).reduce((a, b) => a + b, 0);
  $('counts').textContent = t('counts', active, s.unacknowledged ?? 0);
}

// ------------------------------------------------------------------ alarms ---

async function loadAlarms() {
  const list = await get('/api/v1/alarms?state=open');
  state.alarms = new Map(list.map(a => [a.alarm_id, a]));
  renderAlarms();
}

function renderAlarms() {
  const body = $('alarms');
  const rows = [...state.alarms.values()].sort((a, b) => b.alarm_id - a.alarm_id).map(alarmRow);
  body.replaceChildren(...rows);
  alarmCount();
}

function alarmCount() {
  $('alarm-count').textContent = state.alarms.size ? `(${state.alarms.size})` : '';
  $('alarms-empty').hidden = state.alarms.size > 0;
}

function alarmRow(a) {
  const tr = document.createElement('tr');
  tr.className = a.state;
  tr.dataset.alarmId = a.alarm_id;
  tr.dataset.point = a.point;
  tr.dataset.state = a.state;
  tr.append(
    cell(fmtTime(a.raised_at)),
    cell(a.point),
    cell(a.message),
    cell(t(`prio.${a.priority}`)),
    cell(t(`state.${a.state}`), 'state'),
  );
  const actions = cell('', 'actions');
  if (canOperate()) {
    if (a.state === 'active_unacked' || a.state === 'returned_unacked') {
      const b = document.createElement('button');
      b.type = 'button'; b.className = 'ack'; b.textContent = t('alarms.ack');
      b.addEventListener('click', () => acknowledge(a.alarm_id, b));
      actions.append(b);
    }
    if (a.state === 'active_unacked' || a.state === 'active_acked') {
      const b = document.createElement('button');
      b.type = 'button'; b.className = 'shelve'; b.textContent = t('alarms.shelve');
      b.addEventListener('click', () => shelve(a.alarm_id));
      actions.append(b);
    }
    const c = document.createElement('button');
    c.type = 'button'; c.className = 'comment'; c.textContent = t('alarms.comment');
    c.addEventListener('click', () => comment(a.alarm_id));
    actions.append(c);
  }
  tr.append(actions);
  return tr;
}

/** One alarm changed: replace its row, add it, or remove it once it is over. */
function upsertAlarm(a) {
  const old = $('alarms').querySelector(`tr[data-alarm-id="${a.alarm_id}"]`);
  const over = a.state === 'normal';
  if (over) {
    state.alarms.delete(a.alarm_id);
    old?.remove();
  } else {
    state.alarms.set(a.alarm_id, a);
    const row = alarmRow(a);
    if (old) old.replaceWith(row);
    else {
      const after = [...$('alarms').children].find(r => Number(r.dataset.alarmId) < a.alarm_id);
      $('alarms').insertBefore(row, after || null);
    }
  }
  alarmCount();
  updatePointAlarm(a);
}

function onAlarmEvent(e) {
  upsertAlarm(e);
  if (e.transition === 'raised') toast(e.message);
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    const alarm = await post(`/api/v1/alarms/${id}/ack`, {});
    upsertAlarm(alarm);
    toast(t('done'));
  } catch (e) {
    button.disabled = false;
    toast(`${t('failed')}: ${e.message}`);
  }
}

async function comment(id) {
  const text = prompt(t('alarms.comment_prompt'));
  if (!text || !text.trim()) return;
  try {
    await post(`/api/v1/alarms/${id}/comment`, { comment: text.trim() });
    toast(t('done'));
  } catch (e) { toast(`${t('failed')}: ${e.message}`); }
}

async function shelve(id) {
  const reason = prompt(t('alarms.shelve_reason'));
  if (!reason) return;
  const minutes = Number(prompt(t('alarms.shelve_minutes'), '60'));
  if (!(minutes > 0)) return;
  try {
    const r = await post(`/api/v1/alarms/${id}/shelve`, { by: state.name, reason, duration_secs: Math.round(minutes * 60) });
    if (r.alarm) upsertAlarm(r.alarm);
    toast(t('done'));
  } catch (e) { toast(`${t('failed')}: ${e.message}`); }
}

// ---------------------------------------------------- points, drawn virtually ---

const ROW_H = 28;
let pointsTimer = null;

async function showPoints() {
  await loadPoints();
  clearInterval(pointsTimer);
  // Values refresh every few seconds; only the rows in view are redrawn.
  pointsTimer = setInterval(() => { if (current() === 'points') loadPoints(); else clearInterval(pointsTimer); }, 3000);
}

async function loadPoints() {
  try {
    state.points = await get('/api/v1/points');
  } catch (e) { toast(e.message); return; }
  state.pointIndex = new Map(state.points.map((p, i) => [p.tag, i]));
  filterPoints();
}

function filterPoints() {
  const f = $('points-filter').value.trim().toLowerCase();
  state.filtered = f
    ? state.points.filter(p => p.tag.toLowerCase().includes(f) || p.name.toLowerCase().includes(f) || p.area.toLowerCase().includes(f))
    : state.points;
  $('points-count').textContent = `(${state.filtered.length})`;
  $('points-spacer').style.height = `${state.filtered.length * ROW_H}px`;
  renderVisiblePoints();
}

function renderVisiblePoints() {
  const scroll = $('points-scroll');
  const first = Math.max(0, Math.floor(scroll.scrollTop / ROW_H) - 5);
  const count = Math.ceil(scroll.clientHeight / ROW_H) + 10;
  const rows = $('points-rows');
  rows.style.transform = `translateY(${first * ROW_H}px)`;
  const out = [];
  for (const p of state.filtered.slice(first, first + count)) {
    const row = document.createElement('div');
    row.className = 'vrow';
    row.dataset.tag = p.tag;
    const span = (text, cls) => { const s = document.createElement('span'); s.textContent = text ?? ''; if (cls) s.className = cls; return s; };
    row.append(
      span(p.tag), span(p.name),
      span(p.value == null ? '–' : `${Number(p.value).toFixed(2)} ${p.unit}`),
      span(p.quality, qualityClass(p.quality)),
      span(p.open_alarms ? t(`state.${p.alarm_state}`) : ''),
      span(p.area),
    );
    out.push(row);
  }
  rows.replaceChildren(...out);
}

function updatePointAlarm(a) {
  const i = state.pointIndex.get(a.point);
  if (i == null || current() !== 'points') return;
  const p = state.points[i];
  p.alarm_state = a.state;
  p.open_alarms = a.state === 'normal' ? Math.max(0, p.open_alarms - 1) : Math.max(1, p.open_alarms);
}

// ------------------------------------------------------------ a point's trend ---

const trend = new Trend($('trend'));
let trendTimer = null;
let trendTag = null;

async function showPoint(tag, rangeMs = 600000) {
  trendTag = tag;
  $('point-tag').textContent = tag;
  clearInterval(trendTimer);
  let point = null;
  try {
    const points = state.points.length ? state.points : await get('/api/v1/points');
    point = points.find(p => p.tag === tag);
  } catch (e) { toast(e.message); }
  $('point-name').textContent = point ? point.name : '';
  trend.reset(rangeMs, point?.unit);
  const to = Date.now(), from = to - rangeMs;
  const bucket = Math.max(1000, Math.ceil(rangeMs / 600));
  try {
    const h = await get(`/api/v1/points/${encodeURIComponent(tag)}/history?from_ms=${from}&to_ms=${to}&bucket_ms=${bucket}`);
    trend.addBuckets(h.buckets);
  } catch (e) { toast(e.message); }
  trend.draw();
  if (point) showNow(point);
  // Live: the readings stored since the last one drawn, once a second.
  trendTimer = setInterval(async () => {
    if (current() !== 'point' || trendTag !== tag) { clearInterval(trendTimer); return; }
    const since = (trend.last() ?? Date.now() - 5000) + 1;
    try {
      const rows = await get(`/api/v1/points/${encodeURIComponent(tag)}/history?from_ms=${since}&to_ms=${Date.now()}&limit=1000`);
      trend.addReadings(rows);
      const last = rows[rows.length - 1];
      if (last) showNow({ value: last.value, quality: last.quality, unit: point?.unit, time: new Date(last.ts_ms).toISOString() });
    } catch { /* the next tick retries */ }
    trend.draw();
  }, 1000);
}

function showNow(p) {
  const el = $('point-now');
  el.textContent = `${p.value == null ? '–' : Number(p.value).toFixed(2)} ${p.unit || ''} · ${p.quality} · ${fmtTime(p.time)}`;
  el.className = `now ${qualityClass(p.quality)}`;
}

// ------------------------------------------------------------------ tickets ---

const TICKET_STATES = ['found', 'dispatched', 'rectifying', 'rectified', 'verified', 'closed'];
const NEXT = { found: ['dispatched'], dispatched: ['rectifying'], rectifying: ['rectified'], rectified: ['verified', 'rectifying'], verified: ['closed'], closed: [] };

async function loadTickets() {
  $('tickets-error').textContent = '';
  let tickets = [];
  try {
    tickets = await get('/api/v1/tickets?limit=1000');
  } catch (e) {
    $('tickets-error').textContent = `${t('tickets.unavailable')}: ${e.message}`;
  }
  const board = $('board');
  const columns = TICKET_STATES.map(s => {
    const col = document.createElement('div');
    col.className = 'column';
    col.dataset.state = s;
    const h = document.createElement('h3');
    h.textContent = t(`ticket.${s}`);
    col.append(h);
    for (const tk of tickets.filter(x => x.state === s)) col.append(ticketCard(tk));
    return col;
  });
  board.replaceChildren(...columns);
}

function ticketCard(tk) {
  const card = document.createElement('div');
  card.className = `ticket${tk.overdue ? ' overdue' : ''}`;
  card.dataset.ticketId = tk.ticket_id;
  const title = document.createElement('strong');
  title.textContent = `#${tk.ticket_id} ${tk.title}`;
  const meta = document.createElement('small');
  meta.textContent = [tk.point, tk.area, tk.assignee, tk.deadline && fmtTime(tk.deadline)].filter(Boolean).join(' · ');
  card.append(title, meta);
  if (canOperate()) {
    for (const to of NEXT[tk.state] || []) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = `${t('tickets.move')} ${t(`ticket.${to}`)}`;
      b.addEventListener('click', async () => {
        const body = { to };
        if (to === 'dispatched') {
          body.assignee = prompt(t('tickets.assignee'), tk.assignee || '') || undefined;
          const days = Number(prompt(t('tickets.deadline_days'), '7'));
          if (!body.assignee || !(days > 0)) return;
          body.deadline = new Date(Date.now() + days * 86400000).toISOString();
        }
        const comment = prompt(t('tickets.comment'), '');
        if (comment === null) return;
        if (comment.trim()) body.comment = comment.trim();
        try { await post(`/api/v1/tickets/${tk.ticket_id}/move`, body); loadTickets(); } catch (e) { toast(`${t('failed')}: ${e.message}`); }
      });
      card.append(b);
    }
  }
  return card;
}

$('ticket-new').addEventListener('submit', async e => {
  e.preventDefault();
  const title = $('ticket-title').value.trim();
  if (!title) return;
  try {
    await post('/api/v1/tickets', { title });
    $('ticket-title').value = '';
    loadTickets();
  } catch (err) { toast(`${t('failed')}: ${err.message}`); }
});

// ------------------------------------------------------------------- routing ---

function current() {
  const h = location.hash.replace(/^#\/?/, '');
  return h.split('/')[0] || 'map';
}

function route() {
  if (!state.role) return;
  const [view, arg] = location.hash.replace(/^#\/?/, '').split('/');
  const name = ['map', 'points', 'point', 'tickets'].includes(view) ? view : 'map';
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${name}`;
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.getAttribute('href') === `#/${name === 'point' ? 'points' : name}`);
  if (name === 'points') showPoints();
  if (name === 'point' && arg) showPoint(decodeURIComponent(arg));
  if (name === 'tickets') loadTickets();
  // Ticket changes made elsewhere (the workflow system, another console) show within 15 s.
  clearInterval(route.ticketsTimer);
  if (name === 'tickets') route.ticketsTimer = setInterval(() => { if (current() === 'tickets') loadTickets(); }, 15000);
}

function rerenderTexts() {
  relabel();
  renderAlarms();
  if (state.role) $('who').textContent = `${state.name} · ${t(`role.${state.role}`)}`;
  if (state.status) showStatus(state.status);
  $('live').textContent = t(`live.${$('live').dataset.state}`);
  if (current() === 'points') renderVisiblePoints();
  if (current() === 'tickets') loadTickets();
}

$('points-scroll').addEventListener('scroll', () => requestAnimationFrame(renderVisiblePoints), { passive: true });
$('points-filter').addEventListener('input', filterPoints);
for (const b of document.querySelectorAll('[data-range]')) {
  b.addEventListener('click', () => { if (trendTag) showPoint(trendTag, Number(b.dataset.range)); });
}

boot();
