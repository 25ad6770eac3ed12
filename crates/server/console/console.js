// The opensig operator console: plain DOM code, no library, no build step. Every value from
// the server is put in the page as text (textContent), never as markup.
'use strict';

const $ = (id) => document.getElementById(id);
let me = null; // {operator, read_only, csrf, node}
let overviewTimer = null;
let tail = null;
let channelsNext = null;
let currentChannel = null;
const SAMPLES = 450;

async function call(method, path, body) {
  const headers = {};
  if (method !== 'GET') headers['x-csrf-token'] = me ? me.csrf : '';
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401 && path !== '/console/api/signin') showSignin('Signed out.');
  return { ok: r.ok, status: r.status, data };
}

const api = (path) => `/console/api/v1/apps/${encodeURIComponent(app())}${path}`;
const app = () => $('app').value;
const enc = encodeURIComponent;

function row(tbody, cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.appendChild(c); else td.textContent = c == null ? '' : String(c);
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
  return tr;
}

function button(text, onclick, act = true) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.addEventListener('click', onclick);
  if (act) b.classList.add('act');
  return b;
}

function say(id, r, done) {
  $(id).textContent = r.ok ? done : `Refused: ${r.data.error || r.status}`;
}

function showSignin(message) {
  me = null;
  stopTail();
  clearInterval(overviewTimer);
  $('console-view').hidden = true;
  $('signout').hidden = true;
  // nothing the last operator saw stays in the page for the next one
  $('account').hidden = true;
  $('channel').hidden = true;
  for (const id of ['events', 'channel-history', 'account-result', 'channel-result', 'webhook-result']) $(id).textContent = '';
  for (const t of document.querySelectorAll('#console-view tbody')) t.textContent = '';
  for (const f of document.querySelectorAll('#console-view form')) f.reset();
  $('who').textContent = '';
  $('signin-view').hidden = false;
  $('signin-error').textContent = message || '';
}

function showConsole(session) {
  me = session;
  $('signin-view').hidden = true;
  $('console-view').hidden = false;
  $('signout').hidden = false;
  $('who').textContent = `${me.operator}${me.read_only ? ' (read-only)' : ''} · node ${me.node}`;
  for (const el of document.querySelectorAll('.acts')) el.hidden = me.read_only;
  refresh();
  overviewTimer = setInterval(refresh, 2000);
}

// ---------------------------------------------------------------- the cluster

const fmtBytes = (b) => `${(b / 1048576).toFixed(1)} MiB`;
function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}

let lastOverview = null;
async function refresh() {
  const r = await call('GET', '/console/api/overview');
  if (!r.ok) return;
  const o = r.data;
  lastOverview = o;
  const tbody = $('nodes').tBodies[0];
  tbody.textContent = '';
  for (const n of o.nodes) {
    const up = Math.max(0, Math.round((n.at_ms - n.started_ms) / 1000));
    row(tbody, [n.id, n.url, n.sessions, n.connections, fmtBytes(n.memory), fmtUptime(up),
      n.in_per_s.toFixed(1), n.out_per_s.toFixed(1)]);
  }
  chart($('chart-sessions'), [sum(o.nodes, 'series_sessions')], ['#067647']);
  chart($('chart-messages'), [sum(o.nodes, 'series_in'), sum(o.nodes, 'series_out')], ['#2563eb', '#d97706']);
  const select = $('app');
  const apps = o.apps.join('\n');
  if (select.dataset.apps !== apps) {
    const was = select.value;
    select.textContent = '';
    for (const a of o.apps) {
      const opt = document.createElement('option');
      opt.value = a; opt.textContent = a;
      select.appendChild(opt);
    }
    if (o.apps.includes(was)) select.value = was;
    select.dataset.apps = apps;
  }
  const online = o.nodes.reduce((t, n) => t + ((n.apps || {})[app()] || 0), 0);
  $('app-online').textContent = app() ? `${online} online` : '';
  const refused = {};
  for (const n of o.nodes) for (const [k, v] of Object.entries(n.refused || {})) refused[k] = (refused[k] || 0) + v;
  const rt = $('refusals').tBodies[0];
  rt.textContent = '';
  for (const [k, v] of Object.entries(refused).sort()) row(rt, [k, v]);
  webhooks(o);
}

// per-node series end at their nodes' last samples: add them up aligned at the end
function sum(nodes, field) {
  const len = Math.max(0, ...nodes.map((n) => (n[field] || []).length));
  const out = new Array(len).fill(0);
  for (const n of nodes) {
    const s = n[field] || [];
    for (let i = 0; i < s.length; i++) out[len - s.length + i] += s[i];
  }
  return out;
}

function chart(svg, series, colors) {
  const W = 600, H = 160, pad = 4;
  const max = Math.max(1, ...series.flat());
  // a fixed 15-minute axis (the server keeps 450 samples, one every 2 s): now at the right
  const n = Math.max(SAMPLES, ...series.map((s) => s.length));
  svg.textContent = '';
  const ns = 'http://www.w3.org/2000/svg';
  series.forEach((s, k) => {
    if (!s.length) return;
    const pts = s.map((v, i) => {
      const x = pad + ((i + n - s.length) / (n - 1)) * (W - 2 * pad);
      const y = H - pad - (v / max) * (H - 2 * pad - 14);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', colors[k]);
    line.setAttribute('stroke-width', '1.5');
    svg.appendChild(line);
  });
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', '6'); label.setAttribute('y', '14');
  label.setAttribute('font-size', '12'); label.setAttribute('fill', '#5a6475');
  label.textContent = `max ${Math.round(max * 10) / 10}`;
  svg.appendChild(label);
  for (const [x, anchor, text] of [[6, 'start', '−15 min'], [W - 6, 'end', 'now']]) {
    const t = document.createElementNS(ns, 'text');
    t.setAttribute('x', String(x)); t.setAttribute('y', String(H - 6));
    t.setAttribute('font-size', '11'); t.setAttribute('fill', '#8a94a6');
    t.setAttribute('text-anchor', anchor);
    t.textContent = text;
    svg.appendChild(t);
  }
  svg.dataset.points = String(series.reduce((t, s) => t + s.length, 0));
  svg.dataset.last = series.map((s) => s[s.length - 1] || 0).join(',');
}

// ---------------------------------------------------------------- accounts

async function lookup(account) {
  const r = await call('GET', api(`/users/${enc(account)}`));
  $('account').hidden = false;
  $('account-result').textContent = '';
  if (!r.ok) {
    $('account-name').textContent = account;
    $('account-status').textContent = `refused: ${r.data.error || r.status}`;
    return;
  }
  const u = r.data;
  $('account-name').textContent = u.account;
  $('account-status').textContent = u.online ? 'online' : 'offline';
  $('account-status').className = u.online ? 'online' : 'offline';
  $('account-node').textContent = u.node ? `on node ${u.node}` : '';
  $('account-channels').textContent = (u.channels.join(', ') || '—') + (u.complete ? '' : ' (first channels only)');
  const tb = $('account-attrs').tBodies[0];
  tb.textContent = '';
  for (const [k, v] of Object.entries(u.attrs)) row(tb, [k, v]);
}

// ---------------------------------------------------------------- channels

async function channels(more) {
  const prefix = $('channel-prefix').value;
  const cursor = more ? channelsNext : '';
  const r = await call('GET', api(`/channels?limit=50&prefix=${enc(prefix)}&cursor=${enc(cursor || '')}`));
  const tb = $('channels').tBodies[0];
  if (!more) tb.textContent = '';
  if (!r.ok) return;
  for (const c of r.data.channels) {
    const tr = row(tb, [c.name, c.members]);
    tr.addEventListener('click', () => channel(c.name));
  }
  channelsNext = r.data.next;
  $('channels-more').hidden = !channelsNext;
}

async function channel(name) {
  currentChannel = name;
  $('channel').hidden = false;
  $('channel-name').textContent = name;
  const base = `/channels/${enc(name)}`;
  const [m, a, h] = await Promise.all([
    call('GET', api(`${base}/members?limit=100`)),
    call('GET', api(`${base}/attrs`)),
    call('GET', api(`${base}/history?limit=20`)),
  ]);
  if (m.ok) {
    $('channel-count').textContent = m.data.count;
    $('channel-members').textContent = m.data.members.join(', ') || '—';
  }
  const tb = $('channel-attrs').tBodies[0];
  tb.textContent = '';
  if (a.ok) {
    for (const [k, v] of Object.entries(a.data.attrs)) {
      const del = button('Delete', async () => {
        const r = await call('DELETE', api(`${base}/attrs/${enc(k)}`));
        say('channel-result', r, `Deleted ${k}.`);
        channel(name);
      });
      del.hidden = me.read_only;
      row(tb, [k, v, del]);
    }
  }
  const ol = $('channel-history');
  ol.textContent = '';
  if (h.ok) {
    for (const msg of h.data.msgs) {
      const li = document.createElement('li');
      li.textContent = `${msg.account}: ${msg.msg}`;
      ol.appendChild(li);
    }
  }
}

// ---------------------------------------------------------------- events

function stopTail() {
  if (tail) tail.close();
  tail = null;
  $('tail-start').disabled = false;
  $('tail-stop').disabled = true;
  $('tail-state').textContent = '';
}

function startTail() {
  stopTail();
  const q = new URLSearchParams({
    account: $('tail-account').value, channel: $('tail-channel').value, kind: $('tail-type').value,
  });
  tail = new EventSource(`/console/api/apps/${enc(app())}/events?${q}`);
  $('tail-start').disabled = true;
  $('tail-stop').disabled = false;
  $('tail-state').textContent = 'connecting…';
  tail.addEventListener('ready', () => { $('tail-state').textContent = 'live'; });
  tail.addEventListener('error', () => { $('tail-state').textContent = 'reconnecting…'; });
  tail.addEventListener('message', (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch (_) { return; }
    const li = document.createElement('li');
    li.textContent = `${new Date(ev.time).toISOString().slice(11, 23)} ${ev.type} ${JSON.stringify(ev.data)}`;
    const ol = $('events');
    ol.insertBefore(li, ol.firstChild);
    while (ol.children.length > 200) ol.removeChild(ol.lastChild);
  });
}

// ---------------------------------------------------------------- webhooks

function webhooks(o) {
  const state = {};
  for (const n of o.nodes) {
    for (const w of n.webhooks || []) {
      const k = `${w.app}\n${w.endpoint}`;
      const s = state[k] || (state[k] = { delivered: 0, retried: 0, dropped: 0, depth: 0, last_error: null });
      s.delivered += w.delivered; s.retried += w.retried; s.dropped += w.dropped; s.depth += w.depth;
      s.last_error = w.last_error || s.last_error;
    }
  }
  const tb = $('webhooks').tBodies[0];
  tb.textContent = '';
  for (const w of o.webhooks) {
    const s = state[`${w.app}\n${w.endpoint}`] || {};
    const test = button('Test', async () => {
      const r = await call('POST', `/console/api/v1/apps/${enc(w.app)}/webhooks/test`, { endpoint: w.endpoint });
      const res = r.ok ? r.data.results.map((a) => `${a.endpoint}: ${a.status || a.error}`).join('; ') : '';
      $('webhook-result').textContent = r.ok ? `Test ${r.data.id}: ${res}` : `Refused: ${r.data.error || r.status}`;
    });
    test.hidden = me.read_only;
    row(tb, [w.app, w.endpoint, s.delivered || 0, s.retried || 0, s.dropped || 0, s.depth || 0, s.last_error || '', test]);
  }
}

// ---------------------------------------------------------------- wiring

document.addEventListener('DOMContentLoaded', async () => {
  $('signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await call('POST', '/console/api/signin', { name: $('signin-name').value, password: $('signin-password').value });
    $('signin-password').value = '';
    if (r.ok) showConsole(r.data);
    else $('signin-error').textContent = r.status === 429
      ? 'Too many failed sign-ins: this name is locked for a while.'
      : 'Wrong name or password.';
  });
  $('signout').addEventListener('click', async () => {
    await call('POST', '/console/api/signout');
    showSignin('Signed out.');
  });
  $('app').addEventListener('change', () => { stopTail(); $('account').hidden = true; $('channel').hidden = true; refresh(); });
  $('lookup').addEventListener('submit', (e) => { e.preventDefault(); lookup($('lookup-account').value.trim()); });
  $('kick').addEventListener('click', async () => {
    const account = $('account-name').textContent;
    const r = await call('POST', api(`/users/${enc(account)}/kick`));
    await lookup(account);
    say('account-result', r, r.data.kicked ? `Kicked ${account}.` : `${account} had no session.`);
  });
  $('send').addEventListener('submit', async (e) => {
    e.preventDefault();
    const to = $('account-name').textContent;
    const r = await call('POST', api('/peer_messages'), { from: $('send-from').value, to, msg: $('send-msg').value });
    say('account-result', r, `Sent to ${to}.`);
  });
  $('channel-search').addEventListener('submit', (e) => { e.preventDefault(); channels(false); });
  $('channels-more').addEventListener('click', () => channels(true));
  $('attr-set').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('attr-name').value;
    const r = await call('PUT', api(`/channels/${enc(currentChannel)}/attrs/${enc(name)}`), { value: $('attr-value').value });
    say('channel-result', r, `Set ${name}.`);
    channel(currentChannel);
  });
  $('attr-clear').addEventListener('click', async () => {
    const r = await call('DELETE', api(`/channels/${enc(currentChannel)}/attrs`));
    say('channel-result', r, 'Cleared every attribute.');
    channel(currentChannel);
  });
  $('post').addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await call('POST', api(`/channels/${enc(currentChannel)}/messages`), { from: $('post-from').value, msg: $('post-msg').value });
    say('channel-result', r, 'Posted.');
    channel(currentChannel);
  });
  $('tail').addEventListener('submit', (e) => { e.preventDefault(); startTail(); });
  $('tail-stop').addEventListener('click', stopTail);
  const r = await call('GET', '/console/api/session');
  if (r.ok) showConsole(r.data); else showSignin('');
});
