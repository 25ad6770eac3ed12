// A small W3C WebDriver client (Node's fetch only) for the engines Playwright cannot drive
// on these machines: WebKit (WebKitGTK's WebKitWebDriver, which starts MiniBrowser; it needs a
// display, so run the caller under `xvfb-run -a`) and Firefox (geckodriver). One session per
// driver; the page's uncaught errors and unhandled rejections are collected from the moment
// a page is loaded (`errors()`).
//
//   const b = await openBrowser('webkit');
//   await b.goto(url); const v = await b.evaluate((x) => x + 1, 1); await b.close();
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const DRIVERS = {
  webkit: { bin: 'WebKitWebDriver', args: (port) => [`--port=${port}`], capabilities: {} },
  firefox: {
    bin: 'geckodriver',
    args: (port) => ['--port', String(port)],
    capabilities: {
      'moz:firefoxOptions': {
        args: ['-headless'],
        prefs: { 'network.dns.localDomains': '', 'network.captive-portal-service.enabled': false },
      },
    },
  },
};

/** The errors a page collects (installed after each navigation). */
const TRAP = `
  if (!window.__wdErrors) {
    window.__wdErrors = [];
    addEventListener('error', (e) => window.__wdErrors.push('error: ' + (e.message || e)));
    addEventListener('unhandledrejection', (e) => window.__wdErrors.push('unhandled rejection: ' + (e.reason && (e.reason.stack || e.reason))));
  }`;

export async function openBrowser(engine, { timeoutMs = 30_000 } = {}) {
  const d = DRIVERS[engine];
  if (!d) throw new Error(`no WebDriver engine ${engine}`);
  const port = await freePort();
  const proc = spawn(d.bin, d.args(port), { stdio: 'ignore' });
  const base = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  for (;;) {
    try {
      await fetch(`${base}/status`);
      break;
    } catch {
      if (Date.now() - t0 > 10_000) {
        proc.kill('SIGKILL');
        throw new Error(`${d.bin} did not start`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const r = await fetch(`${base}/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ capabilities: { alwaysMatch: d.capabilities } }),
    signal: AbortSignal.timeout(timeoutMs),
  }).then((r) => r.json());
  const id = r.value && r.value.sessionId;
  if (!id) {
    proc.kill('SIGKILL');
    throw new Error(`${engine}: no WebDriver session: ${JSON.stringify(r)}`);
  }
  const call = async (method, path, body) => {
    const res = await fetch(`${base}/session/${id}${path}`, {
      method,
      headers: body === undefined ? undefined : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs * 10),
    }).then((r) => r.json());
    if (res.value && res.value.error) throw new Error(`${engine} ${path}: ${res.value.error}: ${res.value.message}`);
    return res.value;
  };
  await call('POST', '/timeouts', { script: 300_000, pageLoad: 60_000 });
  const b = {
    engine,
    async goto(url) {
      await call('POST', '/url', { url });
      await call('POST', '/execute/sync', { script: TRAP, args: [] });
    },
    /** Run `fn(arg)` in the page (it may return a promise); its JSON result. */
    async evaluate(fn, arg) {
      // the function's source is part of the script WebDriver runs (no eval in the page: a
      // page whose Content-Security-Policy forbids eval can be driven too)
      const script = `const [arg, done] = arguments;
        Promise.resolve().then(() => (${String(fn)})(arg))
          .then((v) => done({ ok: v === undefined ? null : v }), (e) => done({ err: String((e && e.stack) || e) }));`;
      const v = await call('POST', '/execute/async', { script, args: [arg === undefined ? null : arg] });
      if (v && 'err' in v) throw new Error(`${engine} page: ${v.err}`);
      return v && v.ok;
    },
    /** Wait until `fn(arg)` is truthy in the page. */
    async waitForFunction(fn, arg, { timeout = 30_000, polling = 50 } = {}) {
      const t0 = Date.now();
      for (;;) {
        const v = await b.evaluate(fn, arg);
        if (v) return v;
        if (Date.now() - t0 > timeout) throw new Error(`${engine}: condition not met within ${timeout} ms: ${fn}`);
        await new Promise((r) => setTimeout(r, polling));
      }
    },
    async errors() {
      return (await call('POST', '/execute/sync', { script: 'return window.__wdErrors || []', args: [] })) || [];
    },
    async screenshot(path) {
      const png = await call('GET', '/screenshot');
      fs.writeFileSync(path, Buffer.from(png, 'base64'));
    },
    async userAgent() {
      return call('POST', '/execute/sync', { script: 'return navigator.userAgent', args: [] });
    },
    async close() {
      try {
        await fetch(`${base}/session/${id}`, { method: 'DELETE', signal: AbortSignal.timeout(10_000) });
      } catch {}
      proc.kill('SIGTERM');
      const dead = new Promise((r) => proc.once('exit', r));
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await dead;
      clearTimeout(t);
    },
  };
  return b;
}

/** In page `b` (any engine): set an input's value as typing would. */
export const fillIn = (b, sel, value) =>
  b.evaluate(([sel, value]) => {
    const el = document.querySelector(sel);
    el.value = value;
    el.dispatchEvent(new Event('input', { bubbles: true }));
    el.dispatchEvent(new Event('change', { bubbles: true }));
    return true;
  }, [sel, value]);

/** In page `b`: wait until an element matching `sel` contains `text`. */
export const seenIn = (b, sel, text, timeout = 15000) =>
  b.waitForFunction(
    ([sel, text]) => [...document.querySelectorAll(sel)].some((e) => e.textContent.includes(text)),
    [sel, text],
    { timeout },
  );
