// opensig demo: every capability of the AgoraSig 1.4 API on opensig, written against the
// SDK exactly as an existing AgoraSig app would be (global `Signal`, callback properties),
// plus the opensig additions where they help (promises, onReconnecting, errorText).
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const STATE_TEXT = ['Not logged in', 'Connecting…', 'Logged in', 'Reconnecting'];
  const app = {
    signal: null,
    session: null,
    me: '',
    people: new Map(), // account → { online, li }
    convos: new Map(), // peer → { items: [], unread }
    currentPeer: null,
    channels: new Map(), // name → { ch, panel, tab, members: Set, attrs: Map }
    currentChannel: null,
    calls: [], // { call, dir, state, tones, li }
  };

  // ------------------------------------------------------------------ helpers

  const time = (at) => (at === undefined ? new Date() : new Date(at)).toTimeString().slice(0, 8);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function errText(codeOrReason) {
    if (codeOrReason === undefined || codeOrReason === null || codeOrReason === '') return 'unknown error';
    return app.signal ? app.signal.errorText(codeOrReason) : String(codeOrReason);
  }

  /** Text for a rejected SDK promise: the code's sentence plus the server's reason. */
  function errOf(e) {
    const text = errText(e && e.code !== undefined ? e.code : e);
    return e && e.reason ? `${text} [${e.reason}]` : text;
  }

  function notice(text) {
    $('login-error').textContent = text;
  }

  const events = $('events');
  function logEvent(source, name, args) {
    const shown = args.map((a) => {
      if (a && typeof a === 'object' && 'channelName' in a) return `Call(${a.channelName}, ${a.peer})`;
      try {
        return JSON.stringify(a);
      } catch (e) {
        return String(a);
      }
    });
    events.prepend(el('li', {}, el('span', { class: 't' }, time()), `${source}.${name}(${shown.join(', ')})`));
    while (events.children.length > 500) events.lastChild.remove();
  }

  /** Assign a callback property that is also written to the event log. */
  function on(obj, source, name, handler) {
    obj[name] = (...args) => {
      logEvent(source, name, args);
      if (handler) handler(...args);
    };
  }

  function setState(n, attempt) {
    const s = $('state');
    s.className = `state state-${n}`;
    s.textContent = n === 3 ? `Reconnecting (attempt ${attempt || 1})` : STATE_TEXT[n];
    document.body.dataset.state = String(n);
  }

  function applyLogLevel() {
    if (!app.signal) return;
    const level = $('log-level').value;
    if (level === 'off') app.signal.setDoLog(false);
    else app.signal.setDoLog(true, level);
  }

  // ------------------------------------------------------------------ login

  $('server').value = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
  $('account').value = localStorage.getItem('opensig-demo-account') || '';

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const account = $('account').value.trim();
    localStorage.setItem('opensig-demo-account', account);
    notice('');
    const signal = Signal($('appid').value.trim());
    signal.setup_debugging('ap_url', $('server').value.trim());
    app.signal = signal;
    applyLogLevel();
    const s = signal.login(account, $('token').value.trim() || '_no_need_token');
    app.session = s;
    app.me = account;
    setState(1);
    $('login-btn').disabled = true;
    let first = true;
    on(s, 'session', 'onLoginSuccess', () => {
      setState(2);
      if (!first) return; // fires again after each reconnect (1.4 behaviour)
      first = false;
      $('login-form').hidden = true;
      $('whoami').hidden = false;
      $('me').textContent = account;
      $('app').hidden = false;
      watchPeople();
      loadAttrs();
    });
    on(s, 'session', 'onLoginFailed', (code) => {
      setState(0);
      $('login-btn').disabled = false;
      notice(`Login failed — ${errText(code)}`);
    });
    on(s, 'session', 'onLogout', (code) => {
      setState(0);
      resetSession();
      if (code !== 101) notice(`Logged out — ${errText(code)}`);
    });
    on(s, 'session', 'onReconnecting', (n) => setState(3, n));
    on(s, 'session', 'onReconnected', () => setState(2));
    on(s, 'session', 'onError', (name, code, desc) => notice(`${name} failed — ${errText(code)} [${desc}]`));
    on(s, 'session', 'onMessageInstantReceive', (from, _uid, msg) => {
      addPerson(from);
      addDm(from, { mine: false, text: msg, time: time() });
    });
    on(s, 'session', 'onInviteReceived', incomingCall);
    // presence of the people listed: their states now, then each change (kept across
    // reconnects by the SDK)
    on(s, 'session', 'onPeersOnlineStatusChanged', (status) => {
      for (const [name, state] of Object.entries(status)) {
        const p = app.people.get(name);
        if (p) setPresence(p, state);
      }
    });
  });

  $('logout-btn').addEventListener('click', () => app.session && app.session.logout());

  function resetSession() {
    app.session = null;
    $('app').hidden = true;
    $('whoami').hidden = true;
    $('login-form').hidden = false;
    $('login-btn').disabled = false;
    app.channels.clear();
    app.currentChannel = null;
    $('ch-tabs').replaceChildren();
    $('ch-panels').replaceChildren();
    app.convos.clear();
    app.currentPeer = null;
    renderDm();
    app.calls = [];
    $('calls').replaceChildren();
    for (const p of app.people.values()) setPresence(p, null);
  }

  // ------------------------------------------------------------------ people & presence

  function savedPeople() {
    try {
      return JSON.parse(localStorage.getItem('opensig-demo-people') || '[]');
    } catch (e) {
      return [];
    }
  }

  function addPerson(name) {
    if (!name || name === app.me || app.people.has(name)) return;
    const dot = el('span', { class: 'dot', 'aria-hidden': 'true' });
    const presence = el('span', { class: 'presence' }, '…');
    const li = el(
      'li',
      { 'data-person': name },
      dot,
      el('span', { class: 'name' }, name),
      presence,
      el('button', { type: 'button', class: 'secondary', onclick: () => openDm(name) }, 'Message'),
      el('button', { type: 'button', class: 'secondary', onclick: () => { $('call-peer').value = name; $('call-peer').focus(); } }, 'Call'),
    );
    const p = { state: null, li, dot, presence };
    app.people.set(name, p);
    $('people').append(li);
    localStorage.setItem('opensig-demo-people', JSON.stringify([...app.people.keys()]));
    if (app.session) watch([name]);
  }

  // states: ONLINE, UNREACHABLE (connection dropped, may be back in a few seconds), OFFLINE
  function setPresence(p, state) {
    p.state = state;
    p.dot.classList.toggle('on', state === 'ONLINE');
    p.dot.classList.toggle('away', state === 'UNREACHABLE');
    p.presence.textContent = state === null ? '…' : state.toLowerCase();
    p.li.dataset.online = state === null ? '' : String(state === 'ONLINE');
    p.li.dataset.state = state || '';
  }

  function watch(names) {
    app.session
      .subscribePeersOnlineStatus(names)
      .catch((e) => notice(`Watching ${names.join(', ')} failed — ${errText(e.code)}`));
  }

  function watchPeople() {
    if (app.people.size) watch([...app.people.keys()]);
  }

  $('add-person').addEventListener('submit', (ev) => {
    ev.preventDefault();
    addPerson($('person-name').value.trim());
    $('person-name').value = '';
  });
  for (const name of savedPeople()) {
    // shown again after a reload; their status is asked once logged in
    if (!app.people.has(name)) addPerson(name);
  }

  // own attributes
  function loadAttrs() {
    app.session.invoke('io.agora.signal.user_get_attr_all', { account: app.me }, (err, resp) => {
      const body = $('uattrs');
      body.replaceChildren();
      if (err) return notice(`Could not read attributes — ${errText(err)}`);
      const attrs = JSON.parse(resp.json || '{}');
      for (const [k, v] of Object.entries(attrs)) body.append(el('tr', {}, el('td', {}, k), el('td', {}, v)));
    });
  }
  $('attr-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('uattr-name').value.trim();
    app.session
      .invoke('io.agora.signal.user_set_attr', { name, value: $('uattr-value').value })
      .then(loadAttrs, (e) => notice(`Could not set ${name} — ${errOf(e)}`));
  });
  $('uattr-load').addEventListener('click', loadAttrs);

  // ------------------------------------------------------------------ direct messages

  function convo(peer) {
    if (!app.convos.has(peer)) app.convos.set(peer, { items: [], unread: 0 });
    return app.convos.get(peer);
  }

  function addDm(peer, item) {
    const c = convo(peer);
    c.items.push(item);
    if (app.currentPeer !== peer) c.unread++;
    if (!app.currentPeer) app.currentPeer = peer;
    renderDm();
    return item;
  }

  function openDm(peer) {
    convo(peer);
    app.currentPeer = peer;
    renderDm();
    $('dm-text').focus();
  }

  function renderDm() {
    const tabs = $('dm-tabs');
    tabs.replaceChildren();
    for (const [peer, c] of app.convos) {
      if (peer === app.currentPeer) c.unread = 0;
      tabs.append(
        el(
          'button',
          { type: 'button', role: 'tab', 'aria-selected': String(peer === app.currentPeer), onclick: () => openDm(peer) },
          peer,
          c.unread ? el('span', { class: 'badge', 'aria-label': `${c.unread} unread` }, String(c.unread)) : null,
        ),
      );
    }
    const log = $('dm-log');
    log.replaceChildren();
    $('dm-hint').hidden = !!app.currentPeer;
    if (!app.currentPeer) return;
    for (const m of app.convos.get(app.currentPeer).items) {
      const status = m.mine
        ? el('span', { class: `status ${m.status === 'failed' ? 'bad' : m.status === 'delivered' ? 'ok' : ''}` },
            m.status === 'delivered' ? '✓ delivered' : m.status === 'failed' ? `✗ ${m.error || 'failed'}` : '… sending')
        : null;
      log.append(
        el('li', { class: m.mine ? 'mine' : '' }, el('span', { class: 'meta' }, `${m.time} ${m.mine ? 'me' : app.currentPeer}`), m.text, status),
      );
    }
    log.scrollTop = log.scrollHeight;
  }

  $('dm-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const peer = app.currentPeer;
    if (!peer) return notice('Choose a conversation first (Message next to a person).');
    const text = $('dm-text').value;
    $('dm-text').value = '';
    const item = addDm(peer, { mine: true, text, time: time(), status: 'sending' });
    app.session
      .messageInstantSend(peer, text, (isError) => {
        item.status = isError ? 'failed' : 'delivered';
        renderDm();
      })
      .catch((e) => {
        item.status = 'failed';
        item.error = errOf(e);
        renderDm();
      });
  });

  // ------------------------------------------------------------------ channels

  function selectChannel(name) {
    app.currentChannel = name;
    for (const [n, c] of app.channels) {
      c.tab.setAttribute('aria-selected', String(n === name));
      c.panel.hidden = n !== name;
    }
  }

  function renderMembers(c) {
    const ul = c.panel.querySelector('.members');
    ul.replaceChildren(...[...c.members].sort().map((m) => el('li', {}, m === app.me ? `${m} (me)` : m)));
    c.panel.querySelector('.ch-count').textContent = `${c.members.size} member${c.members.size === 1 ? '' : 's'}`;
    c.tab.textContent = `${c.name} (${c.members.size})`;
  }

  function renderAttrs(c) {
    const body = c.panel.querySelector('.attrs');
    body.replaceChildren(
      ...[...c.attrs].map(([k, v]) =>
        el('tr', {}, el('td', {}, k), el('td', {}, v),
          el('td', {}, el('button', { type: 'button', class: 'secondary', 'aria-label': `Delete ${k}`,
            onclick: () => c.ch.channelDelAttr(k).catch((e) => notice(`Delete ${k} failed — ${errOf(e)}`)) }, 'Delete'))),
      ),
    );
  }

  function addChannelMessage(c, from, text) {
    const ol = c.panel.querySelector('.messages');
    ol.append(el('li', { class: from === app.me ? 'mine' : '' }, el('span', { class: 'meta' }, `${time()} ${from}`), text));
    ol.scrollTop = ol.scrollHeight;
  }

  // opensig: the channel's recent messages, above what arrives from now on
  function showHistory(c, joinedAt) {
    if (typeof c.ch.history !== 'function') return;
    c.ch.history(20).then((msgs) => {
      const ol = c.panel.querySelector('.messages');
      const first = ol.firstChild;
      for (const m of msgs.filter((m) => m.ts < joinedAt)) {
        ol.insertBefore(el('li', { class: 'history', title: 'said before you joined' }, el('span', { class: 'meta' }, `${time(m.ts)} ${m.account}`), m.msg), first);
      }
    }).catch(() => {});
  }

  function removeChannel(name) {
    const c = app.channels.get(name);
    if (!c) return;
    c.tab.remove();
    c.panel.remove();
    app.channels.delete(name);
    if (app.currentChannel === name) selectChannel(app.channels.keys().next().value || null);
  }

  $('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('join-name').value.trim();
    $('join-name').value = '';
    if (app.channels.has(name)) return selectChannel(name);
    const ch = app.session.channelJoin(name);
    const panel = $('channel-panel').content.firstElementChild.cloneNode(true);
    panel.querySelector('.ch-name').textContent = name;
    panel.dataset.channel = name;
    const tab = el('button', { type: 'button', role: 'tab', 'data-channel': name, onclick: () => selectChannel(name) }, `${name} (…)`);
    const c = { name, ch, panel, tab, members: new Set(), attrs: new Map() };
    app.channels.set(name, c);
    $('ch-tabs').append(tab);
    $('ch-panels').append(panel);
    selectChannel(name);
    const src = `channel[${name}]`;
    on(ch, src, 'onChannelJoined', () => {
      renderMembers(c);
      showHistory(c, Date.now());
    });
    // opensig: after a reconnect, what was said meanwhile arrives as usual; this says how
    // much of it the channel no longer kept
    on(ch, src, 'onMessageChannelLost', (n) => notice(`${n} message(s) in ${name} were sent while you were offline and are no longer kept`));
    on(ch, src, 'onChannelJoinFailed', (err) => {
      notice(`Could not join ${name} — ${errText(err)}`);
      removeChannel(name);
    });
    on(ch, src, 'onChannelUserList', (users) => {
      c.members = new Set(users.map((u) => u[0]));
      renderMembers(c);
    });
    on(ch, src, 'onChannelUserJoined', (account) => {
      c.members.add(account);
      renderMembers(c);
    });
    on(ch, src, 'onChannelUserLeaved', (account) => {
      c.members.delete(account);
      renderMembers(c);
    });
    on(ch, src, 'onChannelAttrUpdated', (k, v, type) => {
      if (type === 'clear') c.attrs.clear();
      else if (type === 'del') c.attrs.delete(k);
      else c.attrs.set(k, v);
      renderAttrs(c);
    });
    on(ch, src, 'onMessageChannelReceive', (account, _uid, msg) => addChannelMessage(c, account, msg));
    on(ch, src, 'onChannelLeaved', () => removeChannel(name));
    panel.querySelector('.ch-send').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = panel.querySelector('.ch-text');
      const text = input.value;
      input.value = '';
      ch.messageChannelSend(text).catch((err) => notice(`Message to ${name} not sent — ${errOf(err)}`));
    });
    panel.querySelector('.ch-attr').addEventListener('submit', (e) => {
      e.preventDefault();
      const k = panel.querySelector('.attr-name').value.trim();
      ch.channelSetAttr(k, panel.querySelector('.attr-value').value).catch((err) => notice(`Set ${k} failed — ${errOf(err)}`));
    });
    panel.querySelector('.attr-clear').addEventListener('click', () =>
      ch.channelClearAttr().catch((err) => notice(`Clear failed — ${errOf(err)}`)),
    );
    panel.querySelector('.ch-leave').addEventListener('click', () => ch.channelLeave());
  });

  // ------------------------------------------------------------------ calls

  const KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

  function renderCall(entry) {
    const { call, dir } = entry;
    const good = ['ringing at peer', 'in call'].includes(entry.state);
    const bad = /failed|refused|ended/.test(entry.state);
    const li = entry.li || (entry.li = el('li'));
    li.dataset.state = entry.state;
    li.replaceChildren(
      el('span', {}, dir === 'out' ? `→ ${call.peer}` : `← ${call.peer}`, ` in ${call.channelName}: `),
      el('span', { class: `call-state ${good ? 'ok' : bad ? 'bad' : ''}`, role: 'status' }, entry.state),
    );
    const live = !bad && entry.state !== 'refused';
    if (live && dir === 'in' && entry.state === 'ringing') {
      li.append(
        el('button', { type: 'button', onclick: () => answer(entry, true) }, 'Accept'),
        el('button', { type: 'button', class: 'danger', onclick: () => answer(entry, false) }, 'Refuse'),
      );
    } else if (live) {
      li.append(el('button', { type: 'button', class: 'danger', onclick: () => call.channelInviteEnd() }, dir === 'out' && entry.state !== 'in call' ? 'Cancel' : 'End'));
    }
    if (entry.state === 'in call') {
      const pad = el('div', { class: 'keypad', role: 'group', 'aria-label': `Keypad for the call with ${call.peer}` });
      for (const k of KEYS) {
        pad.append(el('button', { type: 'button', class: 'secondary', 'aria-label': `Tone ${k}`, onclick: () => {
          call.channelInviteDTMF(k);
          entry.sent += k;
          renderCall(entry);
        } }, k));
      }
      li.append(pad);
    }
    if (entry.sent || entry.tones) {
      li.append(el('span', { class: 'tones' }, `sent: ${entry.sent || '–'}  received: ${entry.tones || '–'}`));
    }
    if (!entry.li.parentNode) $('calls').prepend(entry.li);
  }

  function watchCall(entry) {
    const { call } = entry;
    const src = `call[${call.channelName}/${call.peer}]`;
    const set = (state) => {
      entry.state = state;
      renderCall(entry);
      if (entry === app.ringing && state !== 'ringing') closeIncoming();
    };
    on(call, src, 'onInviteReceivedByPeer', () => set('ringing at peer'));
    on(call, src, 'onInviteAcceptedByPeer', () => set('in call'));
    on(call, src, 'onInviteRefusedByPeer', (extra) => set(`refused${extra ? ` (${extra})` : ''}`));
    on(call, src, 'onInviteFailed', (extra, code) => set(`failed — ${errText(code || extra)}`));
    on(call, src, 'onInviteEndByPeer', (_extra, code) => set(code ? `ended — ${errText(code)}` : 'ended by peer'));
    on(call, src, 'onInviteEndByMyself', () => set('ended'));
    on(call, src, 'onInviteMsg', (extra) => {
      try {
        const m = JSON.parse(extra);
        if (m.msgtype === 'dtmf') entry.tones += m.msgdata;
      } catch (e) {
        entry.tones += '?';
      }
      renderCall(entry);
    });
  }

  $('call-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const peer = $('call-peer').value.trim();
    const channel = $('call-channel').value.trim();
    const extra = { _require_peer_online: $('call-online').checked ? 1 : 0 };
    const timeout = Number($('call-timeout').value);
    if (timeout > 0) extra._timeout = Math.min(30, timeout);
    const call = app.session.channelInviteUser2(channel, peer, JSON.stringify(extra));
    const entry = { call, dir: 'out', state: 'calling…', tones: '', sent: '' };
    app.calls.push(entry);
    watchCall(entry);
    renderCall(entry);
  });

  function incomingCall(call) {
    addPerson(call.peer);
    const entry = { call, dir: 'in', state: 'ringing', tones: '', sent: '' };
    app.calls.push(entry);
    watchCall(entry);
    renderCall(entry);
    app.ringing = entry;
    $('incoming-text').textContent = `${call.peer} invites you to “${call.channelName}”.`;
    const d = $('incoming');
    if (!d.open) d.showModal();
    $('incoming-accept').focus();
  }

  function closeIncoming() {
    const d = $('incoming');
    if (d.open) d.close();
    app.ringing = null;
  }

  function answer(entry, accept) {
    if (entry === app.ringing) closeIncoming();
    if (accept) entry.call.channelInviteAccept('');
    else entry.call.channelInviteRefuse('');
    entry.state = accept ? 'in call' : 'refused';
    renderCall(entry);
  }
  $('incoming-accept').addEventListener('click', () => app.ringing && answer(app.ringing, true));
  $('incoming-refuse').addEventListener('click', () => app.ringing && answer(app.ringing, false));
  $('incoming').addEventListener('cancel', (e) => {
    e.preventDefault(); // Escape must answer: refuse
    $('incoming-refuse').click();
  });

  // ------------------------------------------------------------------ event log

  $('log-level').addEventListener('change', applyLogLevel);
  $('log-clear').addEventListener('click', () => events.replaceChildren());
})();
