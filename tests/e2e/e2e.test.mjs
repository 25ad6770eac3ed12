// The demo app as two people use it: alice and bob in two browser contexts, against the
// opensig-server at OPENSIG_TEST_HTTP (which serves www/ and pkg/). Full-page screenshots of
// the main states go to tests/e2e/artifacts/ (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const ART = path.join(here, 'artifacts');
const BASE = process.env.OPENSIG_TEST_HTTP;
const tag = Math.random().toString(36).slice(2, 7);
const A = 'alice' + tag;
const B = 'bob' + tag;
let browser, alice, bob;
const errors = [];

async function person(name, viewport) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => errors.push(`${name}: ${e}`));
  page.on('console', (m) => m.type() === 'error' && errors.push(`${name} console: ${m.text()}`));
  await page.goto(BASE + '/');
  return page;
}

async function shot(page, name) {
  fs.mkdirSync(ART, { recursive: true });
  await page.screenshot({ path: path.join(ART, name + '.png'), fullPage: true });
}

async function login(page, account) {
  await page.getByLabel('Account', { exact: true }).first().fill(account);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#state', { hasText: 'Logged in' }).waitFor();
}

const person_li = (page, name) => page.locator(`#people li[data-person="${name}"]`);

before(async () => {
  assert.ok(BASE, 'OPENSIG_TEST_HTTP must point at opensig-server serving www/');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  alice = await person('alice', { width: 1280, height: 900 });
  bob = await person('bob', { width: 390, height: 844 }); // phone width
});

after(async () => {
  await browser?.close();
  assert.deepEqual(errors, [], 'no page errors');
});

test('login shows the state; people and presence', async () => {
  await shot(alice, '01-login-form');
  assert.equal(await alice.locator('#state').textContent(), 'Not logged in');
  await login(alice, A);
  await login(bob, B);
  await alice.locator('#person-name').fill(B);
  await alice.getByRole('button', { name: 'Add' }).click();
  await person_li(alice, B).locator('.presence', { hasText: 'online' }).waitFor();
  await bob.locator('#person-name').fill(A);
  await bob.getByRole('button', { name: 'Add' }).click();
  await person_li(bob, A).locator('.presence', { hasText: 'online' }).waitFor();
  await shot(alice, '02-logged-in-people');
});

test('direct messages, with delivery and while offline', async () => {
  await person_li(alice, B).getByRole('button', { name: 'Message' }).click();
  await alice.locator('#dm-text').fill('hello bob');
  await alice.locator('#dm-form').getByRole('button', { name: 'Send' }).click();
  await alice.locator('#dm-log li', { hasText: 'hello bob' }).locator('.status', { hasText: 'delivered' }).waitFor();
  await bob.locator('#dm-log li', { hasText: 'hello bob' }).waitFor();
  // bob goes offline; alice sees it live and writes anyway
  await bob.getByRole('button', { name: 'Log out' }).click();
  await bob.locator('#state', { hasText: 'Not logged in' }).waitFor();
  await person_li(alice, B).locator('.presence', { hasText: 'offline' }).waitFor();
  await alice.locator('#dm-text').fill('are you there?');
  await alice.locator('#dm-form').getByRole('button', { name: 'Send' }).click();
  await alice.locator('#dm-log li', { hasText: 'are you there?' }).locator('.status', { hasText: 'delivered' }).waitFor();
  await shot(alice, '03-messages');
  await login(bob, B);
  await bob.locator('#dm-log li', { hasText: 'are you there?' }).waitFor();
  await person_li(alice, B).locator('.presence', { hasText: 'online' }).waitFor();
  await shot(bob, '04-offline-message-on-phone');
});

test('a channel with members, messages and attributes', async () => {
  const room = 'lobby' + tag;
  for (const page of [alice, bob]) {
    await page.locator('#join-name').fill(room);
    await page.locator('#join-form').getByRole('button', { name: 'Join' }).click();
  }
  const apanel = alice.locator(`.channel[data-channel="${room}"]`);
  const bpanel = bob.locator(`.channel[data-channel="${room}"]`);
  await apanel.locator('.ch-count', { hasText: '2 members' }).waitFor();
  await bpanel.locator('.ch-count', { hasText: '2 members' }).waitFor();
  await apanel.locator('.attr-name').fill('topic');
  await apanel.locator('.attr-value').fill('planning');
  await apanel.locator('.ch-attr').getByRole('button', { name: 'Set' }).click();
  await bpanel.locator('.attrs tr', { hasText: 'planning' }).waitFor();
  await bpanel.locator('.ch-text').fill('hi everyone');
  await bpanel.locator('.ch-send').getByRole('button', { name: 'Send' }).click();
  await apanel.locator('.messages li', { hasText: 'hi everyone' }).waitFor();
  await bpanel.locator('.messages li', { hasText: 'hi everyone' }).waitFor();
  await apanel.locator('.attr-name').fill('mood');
  await apanel.locator('.attr-value').fill('good');
  await apanel.locator('.ch-attr').getByRole('button', { name: 'Set' }).click();
  await bpanel.locator('.attrs tr', { hasText: 'mood' }).waitFor();
  await shot(alice, '05-channel');
  await bpanel.getByRole('button', { name: 'Delete topic' }).click();
  await apanel.locator('.attrs tr', { hasText: 'planning' }).waitFor({ state: 'detached' });
  await apanel.getByRole('button', { name: 'Clear all' }).click();
  await bpanel.locator('.attrs tr').first().waitFor({ state: 'detached' });
  await bpanel.getByRole('button', { name: 'Leave' }).click();
  await apanel.locator('.ch-count', { hasText: '1 member' }).waitFor();
  // joining again shows what was said before, from the channel's history
  await bob.locator('#join-name').fill(room);
  await bob.locator('#join-form').getByRole('button', { name: 'Join' }).click();
  await bpanel.locator('.messages li.history', { hasText: 'hi everyone' }).waitFor();
  await apanel.locator('.ch-count', { hasText: '2 members' }).waitFor();
  await shot(bob, '05b-channel-history');
});

test('a call with DTMF, accepted and ended', async () => {
  await alice.locator('#call-peer').fill(B);
  await alice.locator('#call-timeout').fill('0');
  await alice.locator('#call-form').getByRole('button', { name: 'Call' }).click();
  await bob.locator('#incoming[open]').waitFor();
  await alice.locator('#calls li[data-state="ringing at peer"]').waitFor();
  await shot(bob, '06-incoming-call');
  await bob.locator('#incoming').getByRole('button', { name: 'Accept' }).click();
  await alice.locator('#calls li[data-state="in call"]').waitFor();
  await alice.getByRole('button', { name: 'Tone 5' }).click();
  await alice.getByRole('button', { name: 'Tone #' }).click();
  await bob.locator('#calls li .tones', { hasText: 'received: 5#' }).waitFor();
  await shot(alice, '07-in-call');
  await bob.locator('#calls li[data-state="in call"]').getByRole('button', { name: 'End' }).click();
  await alice.locator('#calls li[data-state="ended by peer"]').waitFor();
  await bob.locator('#calls li[data-state="ended"]').waitFor();
});

test('a refused call and a call to someone offline', async () => {
  await alice.locator('#call-form').getByRole('button', { name: 'Call' }).click();
  await bob.locator('#incoming[open]').waitFor();
  await bob.locator('#incoming').getByRole('button', { name: 'Refuse' }).click();
  await alice.locator('#calls li', { hasText: 'refused' }).waitFor();
  await alice.locator('#call-peer').fill('nobody' + tag);
  await alice.locator('#call-online').check();
  await alice.locator('#call-form').getByRole('button', { name: 'Call' }).click();
  await alice.locator('#calls li', { hasText: 'INVITE_E_PEEROFFLINE (703)' }).waitFor();
  await shot(alice, '08-calls');
});

test('errors are shown with their code and text; the event log records callbacks', async () => {
  await alice.locator('#join-name').fill('__agora_user_online');
  // sending into a reserved channel is refused by the server
  await alice.locator('#join-form').getByRole('button', { name: 'Join' }).click();
  const panel = alice.locator('.channel[data-channel="__agora_user_online"]');
  await panel.locator('.ch-text').fill('x');
  await panel.locator('.ch-send').getByRole('button', { name: 'Send' }).click();
  await alice.locator('#login-error', { hasText: 'GENERAL_E_WRONG_PARAM (1004)' }).waitFor();
  assert.ok((await alice.locator('#events li').count()) > 10);
  await alice.locator('#events li', { hasText: 'session.onLoginSuccess(0)' }).waitFor();
  await alice.selectOption('#log-level', 'DEBUG');
  await shot(alice, '09-errors-and-events');
  await alice.getByRole('button', { name: 'Log out' }).click();
  await alice.locator('#state', { hasText: 'Not logged in' }).waitFor();
});

test("the app's backend heard it all: signed webhooks from the browser sessions", { skip: !process.env.OPENSIG_TEST_WEBHOOK_SINK }, async () => {
  const sink = process.env.OPENSIG_TEST_WEBHOOK_SINK;
  const room = 'lobby' + tag;
  const want = [
    ['user.online', { account: A }],
    ['user.online', { account: B }],
    ['message.offline', { from: A, to: B, text: 'are you there?' }],
    ['user.offline', { account: B, reason: 'logout' }],
    ['channel.occupied', { channel: room }],
    ['member.joined', { channel: room, account: B }],
    ['channel.attr', { channel: room, by: A, op: 'update', name: 'topic', value: 'planning' }],
    ['channel.message', { channel: room, from: B, text: 'hi everyone' }],
    ['member.left', { channel: room, account: B }],
    ['invite.sent', { caller: A, callee: B }],
    ['invite.received', { caller: A, callee: B, by: B }],
    ['invite.accepted', { caller: A, callee: B }],
    ['invite.ended', { caller: A, callee: B, by: B }],
    ['invite.refused', { caller: A, callee: B }],
    ['invite.failed', { caller: A, callee: 'nobody' + tag, code: 703, reason: 'callee_offline' }],
    ['user.offline', { account: A, reason: 'logout' }],
  ];
  const has = (events, [type, data]) =>
    events.some((e) => e.type === type && e.app === 'demo' && Object.entries(data).every(([k, v]) => e.data[k] === v));
  let got = { events: [], bad_signatures: 0 };
  for (let i = 0; i < 200; i++) {
    got = await fetch(`${sink}/events`).then((r) => r.json());
    if (want.every((w) => has(got.events, w))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const missing = want.filter((w) => !has(got.events, w));
  assert.deepEqual(missing, [], `events heard: ${JSON.stringify(got.events.map((e) => [e.type, e.data]))}`);
  assert.equal(got.bad_signatures, 0);
  // events of one key arrive in the order they happened
  const ours = got.events.filter((e) => e.key === `u:${B}`).map((e) => e.type);
  assert.equal(ours[0], 'user.online');
});
