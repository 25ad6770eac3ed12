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

// Where the fields of the msg-v2/v3 string being read are: `at[i]` is the position of its i-th
// space; `spaces` how many of them there are (up to the fields the rule splits off, `split`).
// Kept here, not made per message: a reader reads one string at a time and never keeps them.
const at = [0, 0, 0, 0, 0, 0, 0];
let spaces = 0;

/** Find the fields of `s`, a msg-v2 (prefix `p2`, the name and a space) or msg-v3 string as
 *  crates/protocol msg.rs `parse` splits it (`str.split(' ', n)` as Python does it: n = 6, or 7
 *  for v3). Answers n, or 0 when `s` is neither. */
function split(s, p2, p3) {
  const n = s.startsWith(p3) ? 7 : s.startsWith(p2) ? 6 : 0;
  let from = 0;
  spaces = 0;
  while (spaces < n) {
    const i = s.indexOf(' ', from);
    if (i < 0) break;
    at[spaces++] = i;
    from = i + 1;
  }
  // n + 1 fields at most; the content (the last) may be missing
  return spaces + 1 < n ? 0 : n;
}

/** Field `i` of the string `split` read last ('' when it has fewer). */
function field(s, i) {
  if (i > spaces) return '';
  const from = i === 0 ? 0 : at[i - 1] + 1;
  return i < spaces ? s.slice(from, at[i]) : s.slice(from);
}

/** A msg-v2 / msg-v3 string's fields, as crates/protocol msg.rs `parse` reads them (the SDK's
 *  tests compare the two), or null. */
export function parse(s, v2, v3) {
  const n = split(s, v2 + ' ', v3 + ' ');
  if (!n) return null;
  const o = n - 6;
  return { id: o ? field(s, 1) : undefined, source: field(s, 1 + o), kind: field(s, 4 + o), content: field(s, 6 + o) };
}

const count = (x) => Number.isSafeInteger(x) && x >= 0;

/**
 * Read `ws`'s frames. `t`: [notify, multi, channel2, recvmsg, msg-v2, msg-v3, instant,
 * [[channel event type, [member, member, member], callback, members it gets], …], the instant
 * message's callback]. `enter(io, conn, Date.now(), op, kind, x, y, a, b)` is the core's entry
 * (io, conn: whose socket this is):
 *   op 0: a frame as it is (a: as received, or b: parsed)
 *   op 1: may the reader deliver this channel event? (x: seq, y: number or -1, kind: type
 *         index, a: channel, b: the message's identity or undefined)
 *   op 2: may the reader deliver this instant message? (x: mailbox version, a: msg-v3 id)
 *   op 4: the object numbered x (what answers to op 1 and 2 name)
 * `next(io, conn, Date.now(), op, kind, x, y, z)` asks with numbers only: op 1 as `enter` op 1
 * for the channel op 1 named last (z: the identity or -1; answers -1 when the core was told
 * another channel since: ask with the name), op 2 as `enter` op 2 for a msg-v2 instant message
 * (no id).
 * The answers are numbers: bit 2, deliver it yourself (the core counts it as delivered) to the
 * object numbered by the bits above; else bit 1, hand the frame over as it is instead (nothing
 * was changed); bit 0, hand frames over as they are for now (a binary frame is being inflated
 * and later ones wait behind it, or the core logs what it receives).
 */
export function listen(ws, t, enter, next, io, conn) {
  const [NOTIFY, MULTI, CHANNEL2, RECVMSG, V2, V3, INSTANT, EVENTS, INSTANT_CB] = t;
  const kinds = new Map(EVENTS.map((e, i) => [e[0], i]));
  const P2 = V2 + ' ', P3 = V3 + ' ';
  let asIs = 0;
  let last; // the channel op 1 named last
  let id = -1, obj; // the object the reader called back last, and its number
  const target = (r) => {
    const n = (r - 4) / 8;
    if (n !== id) {
      obj = enter(io, conn, 0, 4, 0, n, 0);
      id = n;
    }
    return obj;
  };
  /** Hand frame `f` over as it is (the answer `r` says so). */
  const handOver = (f, r) => (r & 2 ? enter(io, conn, Date.now(), 0, 0, 0, 0, undefined, f) : r);
  const member = (c, k) => {
    const v = k && c !== null && typeof c === 'object' ? c[k] : undefined;
    return v === undefined ? '' : v;
  };
  const channel = (f, p) => {
    const name = p[1], seq = p[2], text = p[3], num = p[4], sent = p[5];
    if (typeof name !== 'string' || !count(seq) || typeof text !== 'string') return false;
    if ((num !== undefined && !count(num)) || (sent !== undefined && !count(sent))) return false;
    const v = split(text, P2, P3);
    const k = v ? kinds.get(field(text, v - 2)) : undefined;
    if (k === undefined) return false;
    let c;
    try {
      c = JSON.parse(field(text, v));
    } catch (_) {
      return false;
    }
    const n = num === undefined ? -1 : num;
    let r = name === last ? next(io, conn, Date.now(), 1, k, seq, n, sent === undefined ? -1 : sent) : -1;
    if (r < 0) {
      last = name;
      r = enter(io, conn, Date.now(), 1, k, seq, n, name, sent);
    }
    if (r & 4) {
      asIs = 0;
      const e = EVENTS[k], names = e[1];
      fire(target(r), e[2], e[3], member(c, names[0]), member(c, names[1]), member(c, names[2]));
    } else {
      asIs = handOver(f, r);
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
    const s = pair[1], v = split(s, P2, P3);
    if (!v || field(s, v - 2) !== INSTANT) return false;
    const r = v === 7 ? enter(io, conn, Date.now(), 2, 0, pair[0], 0, field(s, 1)) : next(io, conn, Date.now(), 2, 0, pair[0], 0, -1);
    if (r & 4) {
      asIs = 0;
      fire(target(r), INSTANT_CB, 3, field(s, v - 5), 0, field(s, v));
    } else {
      asIs = handOver(f, r);
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
