// Type-check and build the fixture app, serve dist/ on loopback, and run it in headless
// Chromium against the opensig-server at OPENSIG_TEST_WS.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const ws = process.env.OPENSIG_TEST_WS;
if (!ws) throw new Error('OPENSIG_TEST_WS is not set');
const npx = (...args) => execFileSync('npx', ['--no-install', ...args], { cwd: here, stdio: 'inherit' });
npx('tsc', '--noEmit');
npx('vite', 'build', '--logLevel', 'warn');

const dist = path.join(here, 'dist');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
const server = http.createServer((req, res) => {
  const file = path.join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
  if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    const index = path.join(dist, 'index.html');
    res.writeHead(200, { 'content-type': 'text/html' }).end(fs.readFileSync(index));
    return;
  }
  res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
  res.end(fs.readFileSync(file));
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;
const expected = /^ok alice\w+:from a bundle members=1 status=2 online=1 inRoom=true kept=kept$/;
const url = `${base}/?ws=${encodeURIComponent(ws)}`;

// Chromium through Playwright
async function inChromium() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('result').textContent !== 'running', null, { timeout: 15000 });
    const result = await page.textContent('#result');
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    return result;
  } finally {
    await browser.close();
  }
}

// WebKit through WebKitWebDriver (the caller runs under xvfb-run)
async function inWebDriver(engine) {
  const { openBrowser } = await import('../support/webdriver.mjs');
  const b = await openBrowser(engine);
  try {
    await b.goto(url);
    await b.waitForFunction(() => document.getElementById('result').textContent !== 'running', null, { timeout: 15000 });
    const result = await b.evaluate(() => document.getElementById('result').textContent);
    const errors = await b.errors();
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    return result;
  } finally {
    await b.close();
  }
}

let failed = false;
try {
  for (const engine of (process.env.OPENSIG_ENGINES || 'chromium').split(',')) {
    const result = engine === 'chromium' ? await inChromium() : await inWebDriver(engine);
    if (!expected.test(result)) {
      console.error(`npm consumer (${engine}): unexpected result ${JSON.stringify(result)}`);
      failed = true;
    } else {
      console.log(`npm consumer (${engine}): ${result}`);
    }
  }
} finally {
  server.close();
}
if (failed) process.exit(1);
