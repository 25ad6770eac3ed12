// The operator console in real browsers: Chromium (Playwright), Firefox (geckodriver) and
// WebKit (WebKitGTK's WebKitWebDriver, under xvfb-run), each driven through its DOM the same
// way. Starts its own servers from target/debug (an in-memory opensig-server, and two nodes
// sharing a private redis-server) and its users with the native driver
// (target/debug/examples/native_user). Screenshots go to tests/e2e/artifacts/console-*.png.
//
//   OPENSIG_CONSOLE_ENGINES=chromium,firefox,webkit node --test console.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { openBrowser, fillIn, seenIn } from '../support/webdriver.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const ART = path.join(here, 'artifacts');
const SERVER = path.join(ROOT, 'target/debug/opensig-server');
const NATIVE = path.join(ROOT, 'target/debug/examples/native_user');
const ENGINES = (process.env.OPENSIG_CONSOLE_ENGINES || 'chromium').split(',').filter(Boolean);
const APP = 'capp';
const ADMIN_PW = 'admin console password';
const VIEWER_PW = 'viewer console password';
const LOCK_PW = 'lock console password';
const tag = Math.random().toString(36).slice(2, 7);
const procs = [];

const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

async function waitPort(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); r(true); });
      c.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

function start(bin, args, opts = {}) {
  const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'], ...opts });
  procs.push(p);
  return p;
}

/** The `[[operators]]` entry `opensig-server operator` prints. */
const operator = (name, password, readOnly) =>
  execFileSync(SERVER, ['operator', '--name', name, ...(readOnly ? ['--read-only'] : [])], { input: password + '\n' }).toString();

/** An opensig-server with the console on its metrics listener: its ports. */
async function server(config, extra = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'opensig-console-'));
  const file = path.join(dir, 'opensig.toml');
  fs.writeFileSync(file, config, { mode: 0o600 });
  const port = await freePort();
  const consolePort = await freePort();
  start(SERVER, ['--config', file, '--listen', `127.0.0.1:${port}`, '--metrics-listen', `127.0.0.1:${consolePort}`,
    '--www', '/nonexistent', ...extra], { env: { ...process.env, OPENSIG_LOG: 'warn' } });
  await waitPort(port);
  await waitPort(consolePort);
  return { ws: `ws://127.0.0.1:${port}/`, http: `http://127.0.0.1:${port}`, console: `http://127.0.0.1:${consolePort}` };
}

/** A user of the native driver: its output lines, commands, and a wait for a line. */
function nativeUser(ws, account) {
  const p = start(NATIVE, [ws, APP, account]);
  const lines = [];
  const waiters = [];
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      for (const w of [...waiters]) w();
    }
  });
  return {
    lines,
    send: (cmd) => p.stdin.write(cmd + '\n'),
    saw(text, timeout = 15000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const l = lines.find((l) => l.includes(text));
          if (l) { waiters.splice(waiters.indexOf(check), 1); clearTimeout(t); resolve(l); }
        };
        const t = setTimeout(() => reject(new Error(`${account} never saw ${text}: ${lines.join(' | ')}`)), timeout);
        waiters.push(check);
        check();
      });
    },
  };
}

/** A browser with one page, the same small interface in every engine. */
async function browserFor(engine) {
  if (engine !== 'chromium') return openBrowser(engine);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  const errs = [];
  page.on('pageerror', (e) => errs.push(String(e)));
  return {
    engine,
    goto: (url) => page.goto(url),
    evaluate: (fn, arg) => page.evaluate(fn, arg === undefined ? null : arg),
    waitForFunction: (fn, arg, { timeout = 30000 } = {}) => page.waitForFunction(fn, arg === undefined ? null : arg, { timeout, polling: 50 }),
    errors: async () => errs,
    screenshot: (p) => page.screenshot({ path: p, fullPage: true }),
    close: () => browser.close(),
  };
}

/** DOM steps every engine runs the same way. */
function steps(b) {
  const fill = (sel, value) => fillIn(b, sel, value);
  const click = (sel) => b.evaluate((sel) => { document.querySelector(sel).click(); return true; }, sel);
  const seen = (sel, text, timeout = 30000) => seenIn(b, sel, text, timeout).catch((e) => {
    throw new Error(`${b.engine}: no ${sel} with ${JSON.stringify(text)}: ${e.message}`);
  });
  const shown = (sel) => b.waitForFunction((sel) => { const e = document.querySelector(sel); return e && !e.closest('[hidden]'); }, sel);
  const shot = async (name) => {
    fs.mkdirSync(ART, { recursive: true });
    await b.screenshot(path.join(ART, `console-${b.engine}-${name}.png`));
  };
  const signIn = async (name, pw) => {
    await fill('#signin-name', name);
    await fill('#signin-password', pw);
    await click('#signin button[type=submit]');
  };
  const lookup = async (account) => {
    await fill('#lookup-account', account);
    await click('#lookup button[type=submit]');
    await seen('#account-name', account);
  };
  const signOut = async () => {
    await click('#signout');
    await shown('#signin-view');
  };
  return { fill, click, seen, shown, shot, signIn, lookup, signOut };
}

let single, nodeA, nodeB;

before(async () => {
  for (const f of [SERVER, NATIVE]) assert.ok(fs.existsSync(f), `${f} is built (cargo build -p opensig-server --examples)`);
  const ops = operator('admin', ADMIN_PW, false) + operator('viewer', VIEWER_PW, true)
    + ENGINES.map((e) => operator(`lock-${e}`, LOCK_PW, false)).join('');
  const config = `[apps]\n${APP} = ""\n\n[limits]\nconsole_signin_failures = 3\n\n${ops}`;
  single = await server(config);
  const redisPort = await freePort();
  start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await waitPort(redisPort);
  const redis = ['--redis', `redis://127.0.0.1:${redisPort}/`, '--redis-prefix', `console${tag}:`];
  nodeA = await server(config, [...redis, '--node-id', 'nodeA']);
  nodeB = await server(config, [...redis, '--node-id', 'nodeB']);
});

after(() => {
  for (const p of procs) p.kill('SIGTERM');
});

for (const engine of ENGINES) {
  test(`the console in ${engine}: sign-in, a live user, acting on it, roles and CSRF`, async () => {
    const b = await browserFor(engine);
    const s = steps(b);
    const U = `u-${engine}-${tag}`;
    const CH = `ch-${engine}-${tag}`;
    try {
      await b.goto(`${single.console}/console/`);
      await s.shown('#signin-view');
      // a wrong password; then a name locked after three failures, even with its password
      await s.signIn('admin', 'not the password');
      await s.seen('#signin-error', 'Wrong name or password');
      for (let i = 0; i < 3; i++) {
        await b.evaluate(() => { document.querySelector('#signin-error').textContent = ''; return true; });
        await s.signIn(`lock-${engine}`, 'wrong');
        await s.seen('#signin-error', 'Wrong name or password');
      }
      await s.signIn(`lock-${engine}`, LOCK_PW);
      await s.seen('#signin-error', 'locked');
      await s.shot('01-locked');

      await s.signIn('admin', ADMIN_PW);
      await s.shown('#console-view');
      await s.seen('#who', 'admin');
      await s.seen('#nodes tbody td', 'ws://');
      await s.seen('#app option', APP);

      // a user of the native driver appears live in the event tail, then in a lookup
      await s.fill('#tail-account', U);
      await s.click('#tail-start');
      await s.seen('#tail-state', 'live');
      const u = nativeUser(single.ws, U);
      await u.saw('LoginSuccess');
      u.send(`join ${CH}`);
      await u.saw('ChannelJoined');
      await s.seen('#events li', `"account":"${U}"`);
      await s.seen('#events li', 'user.online');
      await s.lookup(U);
      await s.seen('#account-status', 'online');
      await s.seen('#account-channels', CH);

      // the channel: found by prefix; a message posted reaches the member; attributes
      await s.fill('#channel-prefix', `ch-${engine}`);
      await s.click('#channel-search button[type=submit]');
      await s.seen('#channels tbody td', CH);
      await b.evaluate(() => { document.querySelector('#channels tbody tr').click(); return true; });
      await s.seen('#channel-members', U);
      await s.fill('#post-from', 'ops');
      await s.fill('#post-msg', `maintenance ${engine}`);
      await s.click('#post button[type=submit]');
      await u.saw(`maintenance ${engine}`);
      await s.seen('#channel-history li', `maintenance ${engine}`);
      await s.fill('#attr-name', 'topic');
      await s.fill('#attr-value', 'release day');
      await s.click('#attr-set button[type=submit]');
      await s.seen('#channel-attrs td', 'release day');
      await u.saw('"release day"');
      await s.click('#attr-clear');
      await s.seen('#channel-result', 'Cleared');
      await u.saw('"clear"');
      await b.waitForFunction(() => document.querySelector('#channel-attrs tbody').children.length === 0);

      // the chart moves while a load runs
      u.send(`send ${CH} 800`);
      await b.waitForFunction(() => Number((document.querySelector('#chart-messages').dataset.last || '0').split(',')[0]) > 20,
        undefined, { timeout: 20000 });
      await s.shot('02-load');

      // a cross-site POST (another origin, the cookie sent along) without the token: refused
      await b.goto(`${single.http}/`);
      const opaque = await b.evaluate(async (url) => {
        const r = await fetch(url, { method: 'POST', credentials: 'include', mode: 'no-cors' });
        return r.type;
      }, `${single.console}/console/api/v1/apps/${APP}/users/${U}/kick`);
      assert.equal(opaque, 'opaque');
      await b.goto(`${single.console}/console/`);
      await s.shown('#console-view');
      await s.lookup(U);
      await s.seen('#account-status', 'online');

      // kick: the native session hears onLogout(103)
      await s.click('#kick');
      await s.seen('#account-result', `Kicked ${U}`);
      await u.saw('LogoutKicked');
      await s.shot('03-kicked');

      // the read-only role looks, and the server refuses it every act
      await s.signOut();
      await s.signIn('viewer', VIEWER_PW);
      await s.seen('#who', 'read-only');
      const hidden = await b.evaluate(() => [...document.querySelectorAll('.acts')].every((e) => e.hidden));
      assert.ok(hidden, 'no action forms for a read-only operator');
      const refused = await b.evaluate(async (kick) => {
        const s = await (await fetch('/console/api/session')).json();
        const r = await fetch(kick, { method: 'POST', headers: { 'x-csrf-token': s.csrf } });
        return [r.status, (await r.json()).error];
      }, `/console/api/v1/apps/${APP}/users/${U}/kick`);
      assert.deepEqual(refused, [403, 'read_only']);
      await s.shot('04-read-only');
      assert.deepEqual(await b.errors(), [], 'no page errors');
    } finally {
      await b.close();
    }
  });

  test(`the console in ${engine} on two Redis nodes: node A sees and kicks a user on node B`, async () => {
    const b = await browserFor(engine);
    const s = steps(b);
    const U = `v-${engine}-${tag}`;
    try {
      await b.goto(`${nodeA.console}/console/`);
      await s.shown('#signin-view');
      await s.signIn('admin', ADMIN_PW);
      await s.shown('#console-view');
      const u = nativeUser(nodeB.ws, U);
      await u.saw('LoginSuccess');
      await b.waitForFunction(() => {
        const ids = [...document.querySelectorAll('#nodes tbody tr td:first-child')].map((td) => td.textContent);
        return ids.includes('nodeA') && ids.includes('nodeB');
      });
      await s.lookup(U);
      await s.seen('#account-status', 'online');
      await s.seen('#account-node', 'nodeB');
      await s.shot('05-cluster');
      await s.click('#kick');
      await u.saw('LogoutKicked');
      assert.deepEqual(await b.errors(), [], 'no page errors');
    } finally {
      await b.close();
    }
  });
}
