// Shared machinery of the browser suites: the original SDK (fetched with `npm pack` at test
// time, never committed), an opensig-server process, a loopback static server for the test
// pages, and headless Chromium with every non-loopback host blocked.
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
const CACHE = path.join(HERE, '.cache');

/** Path of the unmodified AgoraSigSDK.min.js from agora-signaling-sdk@1.4.0. */
export function originalSdk() {
  const file = path.join(CACHE, 'package', 'AgoraSigSDK.min.js');
  if (!fs.existsSync(file)) {
    fs.mkdirSync(CACHE, { recursive: true });
    const out = execFileSync('npm', ['pack', 'agora-signaling-sdk@1.4.0', '--silent'], { cwd: CACHE })
      .toString()
      .trim()
      .split('\n')
      .pop();
    execFileSync('tar', ['xzf', out], { cwd: CACHE });
  }
  return file;
}

/** Path of the opensig classic script (built by scripts/build-sdk). */
export function opensigSdk() {
  return process.env.OPENSIG_CLASSIC || path.join(ROOT, 'pkg', 'opensig-classic.js');
}

export function serverBin() {
  return process.env.OPENSIG_SERVER_BIN || path.join(ROOT, 'target', 'debug', 'opensig-server');
}

/** SignalingToken, the same formula as the server's (tests it independently). */
export function token(app, cert, account, expiry) {
  const sig = createHash('md5').update(account + app + cert + String(expiry)).digest('hex');
  return `1:${app}:${expiry}:${sig}`;
}

/** Start opensig-server on a free loopback port; resolves with its ws URL. */
export function startServer(extraArgs = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(serverBin(), ['--listen', '127.0.0.1:0', '--www', '/nonexistent', '--metrics-listen', 'off', ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OPENSIG_LOG: process.env.OPENSIG_LOG || 'warn' },
    });
    let out = '';
    const timer = setTimeout(() => reject(new Error('server did not start: ' + out)), 15000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/WebSocket (ws:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1],
          http: m[1].replace('ws://', 'http://').replace(/\/$/, ''),
          proc,
          stop: () =>
            new Promise((r) => {
              if (proc.exitCode !== null) return r();
              proc.once('exit', r);
              proc.kill('SIGTERM');
            }),
        });
      }
    });
    proc.stderr.on('data', (d) => process.stderr.write(d));
    proc.once('exit', (code) => reject(new Error('server exited ' + code + ': ' + out)));
  });
}

/** A loopback HTTP server for the test pages. `sdk` in the query picks the SDK file. */
/** In-page guard: XMLHttpRequest, fetch, sendBeacon, WebSocket and images may only reach
 *  loopback; anything else is refused and recorded in `window.__blocked`. */
const GUARD = `(() => {
  const ok = (u) => { try { const h = new URL(u, location.href).hostname; return h === '127.0.0.1' || h === 'localhost'; } catch { return false; } };
  const blocked = (window.__blocked = []);
  const refuse = (u) => { blocked.push(String(u)); throw new Error('blocked non-loopback request: ' + u); };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (m, u, ...r) { if (!ok(u)) { blocked.push(String(u)); u = 'http://127.0.0.1:9/blocked'; } return open.call(this, m, u, ...r); };
  const f = window.fetch; window.fetch = (u, ...r) => ok(u && u.url || u) ? f(u, ...r) : Promise.reject(new TypeError('blocked: ' + (blocked.push(String(u)), u)));
  if (navigator.sendBeacon) { const b = navigator.sendBeacon.bind(navigator); navigator.sendBeacon = (u, d) => ok(u) ? b(u, d) : (blocked.push(String(u)), false); }
  const WS = window.WebSocket; window.WebSocket = class extends WS { constructor(u, ...p) { if (!ok(u)) refuse(u); super(u, ...p); } };
  const src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, 'src');
  Object.defineProperty(HTMLImageElement.prototype, 'src', { set(u) { if (ok(u)) src.set.call(this, u); else blocked.push(String(u)); }, get() { return src.get.call(this); } });
})();`;

export function startPages() {
  const files = {
    '/harness.js': () => fs.readFileSync(path.join(HERE, 'harness.js')),
    '/sdk/original.js': () => fs.readFileSync(originalSdk()),
    '/sdk/opensig.js': () => fs.readFileSync(opensigSdk()),
    // a second build beside it (OPENSIG_CLASSIC_2: a benchmark comparing two builds, page.html?sdk=opensig2)
    '/sdk/opensig2.js': () => fs.readFileSync(process.env.OPENSIG_CLASSIC_2 || opensigSdk()),
    // the same bytes without their byte order mark (what a careless copy might serve)
    '/sdk/opensig-nobom.js': () => {
      const b = fs.readFileSync(opensigSdk());
      return b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? b.subarray(3) : b;
    },
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/legacy.html') {
      // a page in a legacy encoding, the script served without a charset
      const src = url.searchParams.get('bom') === '0' ? 'opensig-nobom' : 'opensig';
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        '<!doctype html><meta charset="windows-1252"><title>legacy</title>' +
          '<script>window.ERRS = []; addEventListener("error", (e) => ERRS.push(String(e.message)));</script>' +
          `<script src="/sdk/${src}.js"></script>`,
      );
      return;
    }
    if (url.pathname === '/page.html') {
      const sdk = ['opensig', 'opensig2'].includes(url.searchParams.get('sdk')) ? url.searchParams.get('sdk') : 'original';
      // guard=1: for engines driven without Playwright's request routing, the page itself
      // refuses every request to a host other than loopback (the original SDK's telemetry)
      const guard = url.searchParams.get('guard') === '1' ? `<script>${GUARD}</script>` : '';
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        `<!doctype html><meta charset="utf-8"><title>${sdk}</title>${guard}` +
          `<script src="/sdk/${sdk}.js"></script><script src="/harness.js"></script>`,
      );
      return;
    }
    const f = files[url.pathname];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(f());
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        base: `http://127.0.0.1:${server.address().port}`,
        close: () => new Promise((r) => server.close(r)),
      }),
    ),
  );
}

/** Chromium that can reach loopback only. Returns the browser and the blocked-request log. */
export async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--headless=new',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
  return browser;
}

const LOOPBACK = /^(https?|wss?):\/\/(127\.0\.0\.1|localhost)(:\d+)?\//;

/** A new context whose every non-loopback request is aborted (and recorded). */
export async function context(browser) {
  const ctx = await browser.newContext();
  const blocked = [];
  await ctx.route('**/*', (route) => {
    const url = route.request().url();
    if (LOOPBACK.test(url)) return route.continue();
    blocked.push(url);
    return route.abort();
  });
  ctx.blocked = blocked;
  return ctx;
}

/** One user: a page with one SDK, driven through the harness. */
export class User {
  constructor(page, name, sdk) {
    this.page = page;
    this.name = name;
    this.sdk = sdk;
  }

  static async open(ctx, pages, server, name, sdk = 'original', app = 'openapp') {
    const page = await ctx.newPage();
    page.on('console', (m) => {
      if (process.env.COMPAT_VERBOSE) console.log(`[${name}/${sdk}] ${m.type()}: ${m.text()}`);
    });
    const q = new URLSearchParams({ sdk, app, ap: server.url });
    await page.goto(`${pages.base}/page.html?${q}`);
    return new User(page, name, sdk);
  }

  h(fn, ...args) {
    return this.page.evaluate(([fn, args]) => window.H[fn](...args), [fn, args]);
  }

  trace() {
    return this.page.evaluate(() => window.T.slice());
  }

  errors() {
    return this.page.evaluate(() => window.PAGE_ERRORS.slice());
  }

  /** Wait until an entry named `name` (optionally with exactly `args`) is in the trace. */
  async waitFor(name, args, timeout = 8000) {
    try {
      await this.page.waitForFunction(
        ([name, args]) =>
          window.T.some((e) => e[0] === name && (args === null || JSON.stringify(e.slice(1)) === JSON.stringify(args))),
        [name, args === undefined ? null : args],
        { timeout, polling: 20 },
      );
    } catch (e) {
      throw new Error(`${this.name}: ${name}${args ? JSON.stringify(args) : ''} not seen; trace ${JSON.stringify(await this.trace())}`);
    }
  }

  /** Barrier: everything the server had queued for this user has arrived. The user sends a
   *  message to itself and waits for it (the server delivers in order); its entry is then
   *  taken out of the trace. */
  async settled() {
    const marker = await this.h('barrier');
    if (marker === null) return;
    try {
      await this.page.waitForFunction(
        (m) => window.T.some((e) => e[0] === 'onMessageInstantReceive' && e[e.length - 1] === m),
        marker,
        { timeout: 8000, polling: 20 },
      );
    } catch (e) {
      throw new Error(`${this.name}: barrier not back; trace ${JSON.stringify(await this.trace())}`);
    }
    // out go this barrier and any earlier one of this account that came back with a new
    // session (a barrier is a real message: it stays stored until a later poll acknowledges it)
    await this.page.evaluate(() => {
      const mine = (e) =>
        e[0] === 'onMessageInstantReceive' && e[1] === window.H.account && String(e[e.length - 1]).startsWith('barrier ');
      window.T.splice(0, window.T.length, ...window.T.filter((e) => !mine(e)));
    });
  }

  /** Wait until what the page has processed is acknowledged on the server: after a barrier,
   *  the SDK's next mailbox poll (it carries the acknowledgement), then a round trip. */
  async acknowledged() {
    await this.settled();
    const before = await this.page.evaluate(() => window.GETMSG_SENT);
    await this.page.waitForFunction((n) => window.GETMSG_SENT > n, before, { timeout: 8000, polling: 20 });
    await this.h('roundTrip');
  }

  /** Wait for `expected.length` entries, then a barrier, and compare the whole trace exactly:
   *  an extra callback the server caused before the barrier fails the comparison. */
  async expectTrace(expected) {
    try {
      await this.page.waitForFunction((n) => window.T.length >= n, expected.length, { timeout: 8000, polling: 20 });
    } catch (e) {
      // fall through to the comparison, which shows the difference
    }
    await this.settled();
    assert.deepEqual(await this.trace(), expected, `${this.name} (${this.sdk}) trace`);
  }

  async clear() {
    await this.page.evaluate(() => (window.T.length = 0));
  }
}

