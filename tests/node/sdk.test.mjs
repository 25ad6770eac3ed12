// The opensig SDK in plain Node.js (no bundler: `import Signal from 'opensig'`), against the
// servers scripts/test starts: OPENSIG_TEST_WS (development server), OPENSIG_TEST_PROXY_WS /
// _CTL (a proxy in front of it whose connections can be cut), OPENSIG_TEST_HTTP (the same
// server's HTTP: the browser user loads the classic script from it), OPENSIG_TEST_STRICT_WS
// (apps with certificates). WebSocket: the `ws` package (Node 20 has no global one).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Signal from 'opensig';
import { WebSocket } from 'ws';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const WS = process.env.OPENSIG_TEST_WS;
const PROXY_WS = process.env.OPENSIG_TEST_PROXY_WS;
const PROXY_CTL = process.env.OPENSIG_TEST_PROXY_CTL;
const HTTP = process.env.OPENSIG_TEST_HTTP;
const STRICT_WS = process.env.OPENSIG_TEST_STRICT_WS;
const APP = 'nodetest';
const tag = Math.random().toString(36).slice(2, 7);

// every uncaught error or unhandled rejection of the process fails the suite
const troubles = [];
process.on('uncaughtException', (e) => troubles.push(`uncaught: ${e?.stack || e}`));
process.on('unhandledRejection', (e) => troubles.push(`unhandled rejection: ${e?.stack || e}`));
after(() => assert.deepEqual(troubles, [], 'no uncaught error in the SDK'));

/** Resolve with the callback's arguments the next time `obj[name]` is called. */
function next(obj, name, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} not called within ${ms} ms`)), ms);
    obj[name] = (...args) => {
      clearTimeout(t);
      obj[name] = null;
      resolve(args);
    };
  });
}

/** Like `next`, for the first call whose arguments satisfy `pred`. */
function nextWhere(obj, name, pred, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} not called within ${ms} ms`)), ms);
    obj[name] = (...args) => {
      if (!pred(...args)) return;
      clearTimeout(t);
      obj[name] = null;
      resolve(args);
    };
  });
}

async function login(account, options = {}, token = '_no_need_token', app = APP) {
  const signal = Signal(app, { server: WS, WebSocket, ...options });
  const session = signal.login(account, token);
  await session.ready;
  return { signal, session };
}

const sessions = [];
async function user(name, options, token, app) {
  const u = await login(`${name}-${tag}`, options, token, app);
  sessions.push(u.session);
  return u.session;
}
after(async () => {
  for (const s of sessions) {
    try {
      s.logout();
    } catch {}
  }
  await new Promise((r) => setTimeout(r, 200));
});

test('without a WebSocket class, Node 20 gets a clear error', () => {
  if (typeof globalThis.WebSocket === 'function') return; // Node 22 and later have one
  assert.throws(() => Signal(APP, { server: WS }), /no global WebSocket.*pass a WebSocket class/s);
});

test('login and peer-to-peer messages', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const got = next(bob, 'onMessageInstantReceive');
  await alice.messageInstantSend(`bob-${tag}`, 'hello from node');
  const [from, , text] = await got;
  assert.equal(from, `alice-${tag}`);
  assert.equal(text, 'hello from node');
  // a frame past 2 KB comes zlib-compressed (binary): inflated by Node's DecompressionStream
  const big = 'é'.repeat(2500) + ' end';
  const gotBig = next(bob, 'onMessageInstantReceive');
  await alice.messageInstantSend(`bob-${tag}`, big);
  assert.equal((await gotBig)[2], big);
  assert.equal(await alice.queryUserStatus(`bob-${tag}`), 1);
  assert.equal(await alice.queryUserStatus(`nobody-${tag}`), 0);
});

test('the server found through /getaddr (Node\'s fetch)', async () => {
  const signal = Signal(APP, { lbs: HTTP, WebSocket });
  const session = signal.login(`lbs-${tag}`, '_no_need_token');
  sessions.push(session);
  await session.ready;
  assert.equal(await session.queryUserStatus(`lbs-${tag}`), 1);
});

test('a channel with members and attributes', async () => {
  const alice = await user('calice');
  const bob = await user('cbob');
  const name = `room-${tag}`;
  const a = alice.channelJoin(name);
  await a.ready;
  const joined = next(a, 'onChannelUserJoined');
  const b = bob.channelJoin(name);
  const [list] = await next(b, 'onChannelUserList');
  assert.deepEqual(list.map((m) => m[0]).sort(), [`calice-${tag}`, `cbob-${tag}`]);
  assert.equal((await joined)[0], `cbob-${tag}`);
  const updated = next(b, 'onChannelAttrUpdated');
  await a.channelSetAttr('topic', 'rust');
  assert.deepEqual(await updated, ['topic', 'rust', 'update']);
  const said = next(b, 'onMessageChannelReceive');
  await a.messageChannelSend('hi all');
  assert.deepEqual((await said).filter((_, i) => i !== 1), [`calice-${tag}`, 'hi all']);
  assert.equal(await alice.channelQueryUserNum(name), 2);
  const left = next(a, 'onChannelUserLeaved');
  b.channelLeave();
  assert.equal((await left)[0], `cbob-${tag}`);
});

test('an invitation answered by a user in a browser', async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  const errors = [];
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${HTTP}/healthz`);
    await page.addScriptTag({ url: `${HTTP}/pkg/opensig-classic.js` });
    const web = `web-${tag}`;
    // the page's origin is the server: the SDK finds it through /getaddr
    await page.evaluate(
      ([app, account]) =>
        new Promise((resolve, reject) => {
          const s = Signal(app).login(account, '_no_need_token');
          s.onInviteReceived = (call) => call.channelInviteAccept('{"from":"browser"}');
          s.onLoginSuccess = () => resolve();
          s.onLoginFailed = (code) => reject(new Error(`login failed ${code}`));
          window.session = s;
        }),
      [APP, web],
    );
    const caller = await user('caller');
    // wait until the browser user is online
    for (let i = 0; i < 100 && (await caller.queryUserStatus(web)) !== 1; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const call = caller.channelInviteUser2(`call-${tag}`, web, { hello: 'node' });
    const [extra] = await next(call, 'onInviteAcceptedByPeer');
    assert.match(JSON.stringify(extra), /browser/);
    const ended = next(call, 'onInviteEndByMyself');
    await call.channelInviteEnd();
    await ended;
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('a cut connection is recovered: the session comes back and messages flow again', async () => {
  const alice = await user('ralice', { server: PROXY_WS });
  const bob = await user('rbob');
  const back = next(alice, 'onReconnected', 20_000);
  const reconnecting = next(alice, 'onReconnecting', 20_000);
  const r = await fetch(`${PROXY_CTL}/cut`);
  assert.equal(r.status, 200);
  await reconnecting;
  await back;
  const got = next(alice, 'onMessageInstantReceive');
  await bob.messageInstantSend(`ralice-${tag}`, 'still there?');
  assert.equal((await got)[2], 'still there?');
});

/** A SignalingToken: `1:<app>:<expiry>:<md5hex(account + app + certificate + expiry)>`. */
function token(app, cert, account, expiry) {
  const md5 = crypto.createHash('md5').update(account + app + cert + expiry).digest('hex');
  return `1:${app}:${expiry}:${md5}`;
}

test('token renewal on an app with a certificate', { skip: !STRICT_WS }, async () => {
  const app = 'webcert';
  const cert = '0123456789abcdef0123456789abcdef';
  const account = `renew-${tag}`;
  const now = Math.floor(Date.now() / 1000);
  // a token that expires in 31 s: onTokenWillExpire comes at once (30 s before)
  const signal = Signal(app, { server: STRICT_WS, WebSocket });
  const session = signal.login(account, token(app, cert, account, now + 31));
  sessions.push(session);
  const warned = next(session, 'onTokenWillExpire', 15_000);
  await session.ready;
  await warned;
  await assert.rejects(session.renewToken(token(app, cert, 'someone-else', now + 3600)));
  await session.renewToken(token(app, cert, account, now + 3600));
  assert.equal(await session.queryUserStatus(account), 1);
});

test('the example bot joins a channel and answers', async () => {
  const channel = `bot-${tag}`;
  const bot = spawn(process.execPath, [path.join(here, '../../examples/bot/bot.mjs')], {
    env: {
      ...process.env,
      OPENSIG_SERVER: WS,
      OPENSIG_APP: APP,
      BOT_ACCOUNT: `bot-${tag}`,
      BOT_CHANNEL: channel,
      NODE_PATH: path.join(here, 'node_modules'),
    },
    cwd: path.join(here, '../../examples/bot'),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  bot.stdout.on('data', (d) => (out += d));
  bot.stderr.on('data', (d) => (out += d));
  try {
    for (let i = 0; i < 200 && !out.includes(' in '); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /bot: bot-\w+ in bot-/, out);
    const me = await user('talker');
    const ch = me.channelJoin(channel);
    const fromBot = (who) => who === `bot-${tag}`;
    const welcome = nextWhere(ch, 'onMessageChannelReceive', fromBot);
    await ch.ready;
    assert.equal((await welcome)[2], `welcome, talker-${tag}`);
    const reply = nextWhere(ch, 'onMessageChannelReceive', fromBot);
    await ch.messageChannelSend('ping');
    assert.equal((await reply)[2], `@talker-${tag} pong`);
    const direct = next(me, 'onMessageInstantReceive');
    await me.messageInstantSend(`bot-${tag}`, 'time');
    assert.match((await direct)[2], /^\d{4}-\d\d-\d\dT/);
  } finally {
    bot.kill('SIGTERM');
    await new Promise((r) => bot.on('exit', r));
  }
});
