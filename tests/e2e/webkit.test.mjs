// The demo app with one user in WebKit (Safari's engine: WebKitGTK's MiniBrowser through
// WebKitWebDriver, under xvfb-run) and one in Chromium (Playwright), against the
// opensig-server at OPENSIG_TEST_HTTP: login and presence, direct messages, a channel with
// messages and attributes, a call accepted and ended by the WebKit user. The WebKit page is
// driven through its DOM (WebDriver has no Playwright locators); both pages must end without
// an uncaught error or unhandled rejection. Screenshots go to tests/e2e/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { openBrowser, fillIn, seenIn } from '../support/webdriver.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ART = path.join(here, 'artifacts');
const BASE = process.env.OPENSIG_TEST_HTTP;
const tag = Math.random().toString(36).slice(2, 7);
const A = 'alice' + tag; // Chromium
const W = 'wendy' + tag; // WebKit
let browser, alice, wk;
const errors = [];

/** In the WebKit page: set an input's value as typing would. */
const fill = (sel, value) => fillIn(wk, sel, value);
/** In the WebKit page: click the button named `name` inside `scope`. */
const click = (scope, name) =>
  wk.evaluate(([scope, name]) => {
    const root = document.querySelector(scope);
    const b = [...root.querySelectorAll('button')].find(
      (b) => b.textContent.trim() === name || b.getAttribute('aria-label') === name,
    );
    if (!b) throw new Error(`no button ${name} in ${scope}`);
    b.click();
    return true;
  }, [scope, name]);
/** In the WebKit page: wait until an element matching `sel` contains `text`. */
const seen = (sel, text, timeout = 15000) => seenIn(wk, sel, text, timeout);

before(async () => {
  assert.ok(BASE, 'OPENSIG_TEST_HTTP must point at opensig-server serving www/');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  alice = await ctx.newPage();
  alice.on('pageerror', (e) => errors.push(`chromium: ${e}`));
  await alice.goto(BASE + '/');
  wk = await openBrowser('webkit');
  await wk.goto(BASE + '/');
});

after(async () => {
  if (wk) {
    errors.push(...(await wk.errors()).map((e) => `webkit: ${e}`));
    await wk.close();
  }
  await browser?.close();
  assert.deepEqual(errors, [], 'no page errors');
});

test('the WebKit page is WebKit', async () => {
  const ua = await wk.userAgent();
  assert.match(ua, /AppleWebKit\/[\d.]+.*Safari\//);
  assert.doesNotMatch(ua, /Chrome\//);
});

test('login and presence across the two engines', async () => {
  await alice.locator('#account').fill(A);
  await alice.getByRole('button', { name: 'Log in' }).click();
  await alice.locator('#state', { hasText: 'Logged in' }).waitFor();
  await fill('#account', W);
  await click('#login-form', 'Log in');
  await seen('#state', 'Logged in');
  await alice.locator('#person-name').fill(W);
  await alice.getByRole('button', { name: 'Add' }).click();
  await alice.locator(`#people li[data-person="${W}"] .presence`, { hasText: 'online' }).waitFor();
  await fill('#person-name', A);
  await click('#add-person', 'Add');
  await seen(`#people li[data-person="${A}"] .presence`, 'online');
});

test('direct messages both ways', async () => {
  await alice.locator(`#people li[data-person="${W}"]`).getByRole('button', { name: 'Message' }).click();
  await alice.locator('#dm-text').fill('hello webkit');
  await alice.locator('#dm-form').getByRole('button', { name: 'Send' }).click();
  await seen('#dm-log li', 'hello webkit');
  await click(`#people li[data-person="${A}"]`, 'Message');
  await fill('#dm-text', 'hello chromium');
  await click('#dm-form', 'Send');
  await alice.locator('#dm-log li', { hasText: 'hello chromium' }).waitFor();
  await seen('#dm-log li .status', 'delivered');
});

test('a channel with messages and attributes', async () => {
  const room = 'mixed' + tag;
  await alice.locator('#join-name').fill(room);
  await alice.locator('#join-form').getByRole('button', { name: 'Join' }).click();
  await fill('#join-name', room);
  await click('#join-form', 'Join');
  const apanel = alice.locator(`.channel[data-channel="${room}"]`);
  await apanel.locator('.ch-count', { hasText: '2 members' }).waitFor();
  await seen(`.channel[data-channel="${room}"] .ch-count`, '2 members');
  await apanel.locator('.attr-name').fill('topic');
  await apanel.locator('.attr-value').fill('engines');
  await apanel.locator('.ch-attr').getByRole('button', { name: 'Set' }).click();
  await seen(`.channel[data-channel="${room}"] .attrs tr`, 'engines');
  await fill(`.channel[data-channel="${room}"] .ch-text`, 'from safari');
  await click(`.channel[data-channel="${room}"] .ch-send`, 'Send');
  await apanel.locator('.messages li', { hasText: 'from safari' }).waitFor();
  fs.mkdirSync(ART, { recursive: true });
  await wk.screenshot(path.join(ART, '10-webkit-channel.png'));
});

test('a call from Chromium, accepted and ended in WebKit', async () => {
  await alice.locator('#call-peer').fill(W);
  await alice.locator('#call-timeout').fill('0');
  await alice.locator('#call-form').getByRole('button', { name: 'Call' }).click();
  await wk.waitForFunction(() => document.querySelector('#incoming').open, null, { timeout: 15000 });
  await click('#incoming', 'Accept');
  await alice.locator('#calls li[data-state="in call"]').waitFor();
  await wk.waitForFunction(() => !!document.querySelector('#calls li[data-state="in call"]'), null);
  await click('#calls li[data-state="in call"]', 'End');
  await alice.locator('#calls li[data-state="ended by peer"]').waitFor();
  await wk.screenshot(path.join(ART, '11-webkit-call-ended.png'));
  await click('body', 'Log out');
  await seen('#state', 'Not logged in');
});
