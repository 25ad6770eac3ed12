// Functions that run in the benchmark pages (serialized by page.evaluate / WebDriver): shared
// by dispatch.mjs (Chromium) and engines.mjs (every engine).

export /** In the page: `n` frames of one kind, built before the clock starts, handed to the SDK's
 *  socket handlers one after another; callbacks/s from the first frame to the last callback.
 *  Kinds: 'channel' (channel messages for `channel`, sequence numbers from `base`), 'members'
 *  (a member joining and leaving `channel`, alternately), 'peer' (instant messages to a
 *  freshly logged-in account, mailbox versions from 1). */
async function inject([channel, n, base, kind = 'channel']) {
  const tap = window.__taps[window.__taps.length - 1];
  const handlers = [tap.onmessage, ...tap.__listeners].filter(Boolean);
  const payload = 'x'.repeat(100);
  const events = [];
  for (let i = 0; i < n; i++) {
    let frame;
    if (kind === 'peer') {
      const text = `msg-v2 flooder 0 ${window.B.account} instant - ${payload}`;
      frame = JSON.stringify(['notify', ['recvmsg', JSON.stringify([i + 1, text])]]);
    } else {
      const type = kind === 'members' ? (i % 2 ? 'channel_user_leave' : 'channel_user_join') : 'channel_msg';
      const body = JSON.stringify(kind === 'members' ? { channel, account: `member${i >> 1}`, uid: 0 } : { channel, account: 'flooder', uid: 0, msg: payload });
      frame = JSON.stringify(['notify', ['channel2', channel, base + i, `msg-v2 flooder 0 ${channel} ${type} - ${body}`]]);
    }
    events.push(new MessageEvent('message', { data: frame }));
  }
  Object.assign(window.B, { n: 0, last: 0, target: n, live: false });
  const t0 = performance.now();
  for (const e of events) for (const h of handlers) h.call(tap, e);
  // an SDK may dispatch later (microtasks, timers): wait for every callback
  while (window.B.n < n && performance.now() - t0 < 60000) await new Promise((r) => setTimeout(r, 0));
  const took = (window.B.n >= n ? window.B.last : performance.now()) - t0;
  return { rate: (window.B.n * 1000) / took, us: (took * 1000) / Math.max(1, window.B.n), received: window.B.n };
}

export /** In the page: log in as `account` (with the SDK under test, or a bare WebSocket) and join
 *  `channel`; window.B counts channel messages, members joining and leaving, and instant
 *  messages. */
function join([app, url, channel, sdk, account = 'reader-' + sdk]) {
  const B = (window.B = { n: 0, first: 0, last: 0, target: Infinity, live: false, account });
  // the real WebSocket, remembered so that frames can be handed to its handlers directly
  const Real = window.WebSocket;
  window.__taps = [];
  window.WebSocket = class Tap extends Real {
    constructor(...args) {
      super(...args);
      this.__listeners = [];
      window.__taps.push(this);
    }
    addEventListener(type, fn, opts) {
      if (type === 'message') this.__listeners.push(fn);
      super.addEventListener(type, fn, opts);
    }
  };
  // injected frames (`inject`): the clock is read at the last event only, as a read per
  // callback would add the same cost to every SDK (performance.now() takes ~0.9 µs in Firefox
  // here, ~0.2 µs in Chromium); live floods (B.live, dispatch.mjs): first and last event
  const count = () => {
    const n = ++B.n;
    if (n === B.target || B.live) {
      const t = performance.now();
      if (n === 1) B.first = t;
      B.last = t;
    }
  };
  return new Promise((resolve, reject) => {
    if (sdk === 'raw') {
      // no SDK: the WebSocket and JSON.parse alone (the ceiling of any SDK on this page)
      const ws = new WebSocket(url);
      ws.onopen = () =>
        ws.send(JSON.stringify(['login', { vid: app, account, uid: 0, token: '_no_need_token', device: 'websdk', ip: '' }]));
      const one = (f) => {
        if (f[0] === 'login_ret') {
          const line = JSON.parse(f[1][1]).line;
          ws.send(JSON.stringify(['call2', ['channel_join', 1, { line, name: channel }]]));
        } else if (f[0] === 'call2-ret' && f[1][0] === 1) {
          resolve();
        } else if (f[0] === 'notify' && (f[1][0] === 'channel2' || f[1][0] === 'recvmsg')) {
          count();
        } else if (f[0] === 'multi') {
          f[1].forEach(one);
        }
      };
      ws.onmessage = (e) => one(JSON.parse(e.data));
      return;
    }
    const signal = Signal(app);
    signal.setup_debugging('ap_url', url);
    const session = signal.login(account, '_no_need_token');
    session.onMessageInstantReceive = count;
    session.onLoginFailed = (code) => reject(new Error('login failed ' + code));
    session.onLoginSuccess = () => {
      const ch = session.channelJoin(channel);
      ch.onChannelJoinFailed = (code) => reject(new Error('join failed ' + code));
      ch.onChannelJoined = () => resolve();
      ch.onMessageChannelReceive = count;
      ch.onChannelUserJoined = count;
      ch.onChannelUserLeaved = count;
    };
  });
}

