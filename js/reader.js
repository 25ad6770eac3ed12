// The SDK's reader of incoming frames, in JS so that what only passes through the SDK (message
// texts, account and channel names of channel events, the objects JSON.parse makes) stays a JS
// value from the frame to the app's callback: one call into the wasm core per event instead of
// a dozen for its fields (BENCHMARKS.md, "The SDK in each engine").
//
// It reads only the two frames that come by the thousand — a channel event and an inline
// instant message — and only when they have exactly the shape the core expects; everything
// else, and any frame that looks off, goes to the core as it is ("cold"), which applies its
// rules. The names it compares with (event names, message types, the members of each channel
// event) come from the core in `t`, so they live in one place (crates/protocol).

/** `str.split(' ', n)` as Python does it (the msg-v2/msg-v3 rule, crates/protocol msg.rs). */
function split(s, n) {
  const f = [];
  let at = 0;
  while (f.length < n) {
    const i = s.indexOf(' ', at);
    if (i < 0) break;
    f.push(s.slice(at, i));
    at = i + 1;
  }
  f.push(s.slice(at));
  return f;
}

/** A msg-v2 / msg-v3 string's fields, as crates/protocol msg.rs `parse` reads them (the SDK's
 *  tests compare the two), or null. */
export function parse(s, v2, v3) {
  const three = s.startsWith(v3 + ' ');
  if (!three && !s.startsWith(v2 + ' ')) return null;
  const n = three ? 7 : 6;
  const f = split(s, n);
  if (f.length < n) return null;
  const o = three ? 1 : 0;
  return { id: three ? f[1] : undefined, source: f[1 + o], kind: f[4 + o], content: f[6 + o] ?? '' };
}

const count = (x) => Number.isSafeInteger(x) && x >= 0;

/**
 * Read `ws`'s frames. `t`: [notify, multi, channel2, recvmsg, msg-v2, msg-v3, instant,
 * [[channel event type, [member, member, member], callback, members it gets], …], the instant
 * message's callback]. `enter(io, conn, Date.now(), op, kind, x, y, a, b, c, d)` is the core's
 * entry (io, conn: whose socket this is):
 *   op 0: a frame as it is (a: as received, or b: parsed)
 *   op 1: may the reader deliver this channel event? (x: seq, y: number or -1, kind: type
 *         index, a: channel); op 3: the same, of the same channel as this socket's last one
 *   op 2: may the reader deliver this instant message? (x: mailbox version, a: msg-v3 id)
 * It answers the object whose callback the reader calls (op 1-3, granted: the core counts the
 * event as delivered), or a number: bit 1, hand the frame over as it is instead (nothing was
 * changed); bit 0, hand frames over as they are for now (a binary frame is being inflated and
 * later ones wait behind it, or the core logs what it receives).
 */
export function listen(ws, t, enter, io, conn) {
  const [NOTIFY, MULTI, CHANNEL2, RECVMSG, V2, V3, INSTANT, EVENTS, INSTANT_CB] = t;
  const kinds = new Map(EVENTS.map((e, i) => [e[0], i]));
  let asIs = 0;
  let last; // the channel of the last channel event handed over
  const member = (c, k) => {
    const v = k && c !== null && typeof c === 'object' ? c[k] : undefined;
    return v === undefined ? '' : v;
  };
  const channel = (f, p) => {
    const name = p[1], seq = p[2], text = p[3], num = p[4];
    if (typeof name !== 'string' || !count(seq) || typeof text !== 'string') return false;
    if (num !== undefined && !count(num)) return false;
    const m = parse(text, V2, V3);
    const k = m === null ? undefined : kinds.get(m.kind);
    if (k === undefined) return false;
    let c;
    try {
      c = JSON.parse(m.content);
    } catch (_) {
      return false;
    }
    const e = EVENTS[k], names = e[1];
    const op = name === last ? 3 : 1;
    last = name;
    const n = num === undefined ? -1 : num;
    const r = enter(io, conn, Date.now(), op, k, seq, n, name);
    if (r !== null && typeof r === 'object') {
      asIs = 0;
      fire(r, e[2], e[3], member(c, names[0]), member(c, names[1]), member(c, names[2]));
    } else {
      asIs = r & 2 ? enter(io, conn, Date.now(), 0, 0, 0, 0, undefined, f) : r;
    }
    return true;
  };
  const instant = (f, p) => {
    if (typeof p[1] !== 'string') return false;
    let pair;
    try {
      pair = JSON.parse(p[1]);
    } catch (_) {
      return false;
    }
    if (!Array.isArray(pair) || !count(pair[0]) || typeof pair[1] !== 'string') return false;
    const m = parse(pair[1], V2, V3);
    if (!m || m.kind !== INSTANT) return false;
    const r = enter(io, conn, Date.now(), 2, 0, pair[0], 0, m.id);
    if (r !== null && typeof r === 'object') {
      asIs = 0;
      fire(r, INSTANT_CB, 3, m.source, 0, m.content);
    } else {
      asIs = r & 2 ? enter(io, conn, Date.now(), 0, 0, 0, 0, undefined, f) : r;
    }
    return true;
  };
  const one = (f, nested) => {
    if (asIs) {
      asIs = enter(io, conn, Date.now(), 0, 0, 0, 0, undefined, f);
      return;
    }
    const p = Array.isArray(f) ? f[1] : undefined;
    if (Array.isArray(p)) {
      // a batch; one inside a batch (no server sends that) is the core's to read
      if (f[0] === MULTI && !nested) {
        for (let i = 0; i < p.length; i++) one(p[i], true);
        return;
      }
      if (f[0] === NOTIFY && ((p[0] === CHANNEL2 && channel(f, p)) || (p[0] === RECVMSG && instant(f, p)))) return;
    }
    asIs = enter(io, conn, Date.now(), 0, 0, 0, 0, undefined, f);
  };
  ws.onmessage = (e) => {
    const d = e.data;
    if (asIs || typeof d !== 'string') {
      asIs = enter(io, conn, Date.now(), 0, 0, 0, 0, d);
      return;
    }
    let f;
    try {
      f = JSON.parse(d);
    } catch (_) {
      asIs = enter(io, conn, Date.now(), 0, 0, 0, 0, d);
      return;
    }
    one(f, false);
  };
}

/** Call `obj[name]` with the first `n` of `a, b, c` if it is a function; what it throws is
 *  logged, never passed on into the SDK. */
export function fire(obj, name, n, a, b, c) {
  if (obj === null || typeof obj !== 'object') return;
  const f = obj[name];
  if (typeof f !== 'function') return;
  try {
    if (n === 0) f.call(obj);
    else if (n === 1) f.call(obj, a);
    else if (n === 2) f.call(obj, a, b);
    else f.call(obj, a, b, c);
  } catch (e) {
    console.error('opensig: an app callback threw:', e);
  }
}
