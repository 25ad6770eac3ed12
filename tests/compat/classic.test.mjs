// The classic script (pkg/opensig-classic.js) embeds its WebAssembly as UTF-8 text with a byte
// order mark: a page in a legacy encoding must still read it right, and a copy that lost its
// mark must say what is wrong instead of failing somewhere later.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPages, launch, context } from './lib.mjs';

let server, pages, browser, ctx;

before(async () => {
  server = await startServer([]);
  pages = await startPages();
  browser = await launch();
  ctx = await context(browser);
});

after(async () => {
  await browser.close();
  await pages.close();
  await server.stop();
  assert.deepEqual(ctx.blocked, [], 'no request left loopback');
});

test('a windows-1252 page loads the classic script and logs in', async () => {
  const page = await ctx.newPage();
  await page.goto(`${pages.base}/legacy.html`);
  assert.equal(await page.evaluate(() => document.characterSet), 'windows-1252');
  assert.deepEqual(await page.evaluate(() => window.ERRS), []);
  const uid = await page.evaluate(
    (ap) =>
      new Promise((resolve, reject) => {
        const signal = Signal('legacyapp');
        signal.setup_debugging('ap_url', ap);
        const s = signal.login('ann', '_no_need_token');
        s.onLoginSuccess = resolve;
        s.onLoginFailed = reject;
      }),
    server.url,
  );
  assert.equal(uid, 0);
  await page.close();
});

test('without its byte order mark, on such a page, it says how to serve it', async () => {
  const page = await ctx.newPage();
  await page.goto(`${pages.base}/legacy.html?bom=0`);
  const errs = await page.evaluate(() => window.ERRS);
  assert.equal(errs.length, 1, JSON.stringify(errs));
  assert.match(errs[0], /not read as the UTF-8 it is.*charset=utf-8/);
  assert.equal(await page.evaluate(() => typeof window.Signal), 'undefined');
  await page.close();
});
