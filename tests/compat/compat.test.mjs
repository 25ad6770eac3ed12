// Compatibility suite: the unmodified agora-signaling-sdk@1.4.0 (and, with COMPAT_SDKS, the
// opensig classic script, and mixed pairs) against opensig-server in headless Chromium. Each
// scenario asserts the exact callbacks and arguments every user sees.
//
//   COMPAT_SDKS=original,opensig,mixed   which runs to make (default: original)
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPages, launch, context, User, token } from './lib.mjs';

const CERT = '5cfd2fd1755d40ecb72977518be15d3b';
const SECURE_APP = '970ca35de60c44645bbae8a215061b33';
const MODES = (process.env.COMPAT_SDKS || 'original').split(',').map((s) => s.trim()).filter(Boolean);

let seq = 0;
const uniq = (name) => `${name}${++seq}x${Date.now() % 100000}`;

for (const mode of MODES) {
  // which SDK the n-th user of a scenario loads
  const sdkOf = (i) => (mode === 'mixed' ? (i % 2 === 0 ? 'original' : 'opensig') : mode);

  describe(`AgoraSig 1.4 behaviour (${mode})`, () => {
    let server, pages, browser, ctx;

    before(async () => {
      server = await startServer(['--app', 'openapp', '--app', `${SECURE_APP}:${CERT}`]);
      pages = await startPages();
      browser = await launch();
      ctx = await context(browser);
    });

    after(async () => {
      const stray = ctx.blocked.filter((u) => !/agora\.io/.test(u));
      await browser.close();
      await pages.close();
      await server.stop();
      assert.deepEqual(stray, [], 'requests to non-loopback hosts other than the telemetry host');
    });

    const open = (i, name, app) => User.open(ctx, pages, server, name, sdkOf(i), app);

    async function loggedIn(i, name) {
      const u = await open(i, name);
      await u.h('login', name, '_no_need_token');
      await u.waitFor('onLoginSuccess', [0]);
      await u.clear();
      return u;
    }

    async function noPageErrors(...users) {
      for (const u of users) assert.deepEqual(await u.errors(), [], `${u.name} page errors`);
    }

    test('getSDKVersion, login, getStatus and logout', async () => {
      const name = uniq('alice');
      const u = await open(0, name);
      assert.equal(await u.h('sdkVersion'), '1.4.0');
      assert.equal(await u.h('login', name, '_no_need_token'), 1);
      await u.waitFor('onLoginSuccess');
      assert.equal(await u.h('status'), 2);
      await u.h('logout');
      await u.expectTrace([['onLoginSuccess', 0], ['onLogout', 101]]);
      assert.equal(await u.h('status'), 0);
      await noPageErrors(u);
    });

    test('tokens: valid, wrong, expired; unknown app; bad account; empty token', async () => {
      const now = Math.floor(Date.now() / 1000);
      const cases = [
        [uniq('tok'), (a) => token(SECURE_APP, CERT, a, now + 600), SECURE_APP, ['onLoginSuccess', 0]],
        [uniq('tok'), (a) => token(SECURE_APP, 'wrongcert', a, now + 600), SECURE_APP, ['onLoginFailed', 206]],
        [uniq('tok'), (a) => token(SECURE_APP, CERT, a, now - 10), SECURE_APP, ['onLoginFailed', 204]],
        [uniq('tok'), () => '_no_need_token', SECURE_APP, ['onLoginFailed', 206]],
        [uniq('tok'), () => '_no_need_token', 'unknownapp', ['onLoginFailed', 206]],
        [uniq('tok'), () => '', 'openapp', ['onLoginSuccess', 0]],
        ['has space', () => '_no_need_token', 'openapp', ['onLoginFailed', 209]],
        ['x'.repeat(129), () => '_no_need_token', 'openapp', ['onLoginFailed', 209]],
      ];
      let i = 0;
      for (const [account, tok, app, expected] of cases) {
        const u = await open(i++, account, app);
        await u.h('login', account, tok(account), app);
        await u.expectTrace([expected]);
        assert.equal(await u.h('status'), expected[0] === 'onLoginSuccess' ? 2 : 0, `${account} status`);
        await noPageErrors(u);
        await u.page.close();
      }
    });

    test('a second login of the same account kicks the first', async () => {
      const name = uniq('kick');
      const first = await loggedIn(0, name);
      const second = await open(1, name);
      await second.h('login', name, '_no_need_token');
      await second.expectTrace([['onLoginSuccess', 0]]);
      await first.expectTrace([['onLogout', 103]]);
      assert.equal(await first.h('status'), 0);
      await noPageErrors(first, second);
    });

    test('peer-to-peer messages both ways', async () => {
      const a = uniq('alice');
      const b = uniq('bob');
      const alice = await loggedIn(0, a);
      const bob = await loggedIn(1, b);
      await alice.h('send', b, 'hello bob');
      await bob.waitFor('onMessageInstantReceive');
      await bob.h('send', a, 'hi alice, with  two spaces ');
      await alice.expectTrace([['sendCb', false], ['onMessageInstantReceive', b, 0, 'hi alice, with  two spaces ']]);
      await bob.expectTrace([['onMessageInstantReceive', a, 0, 'hello bob'], ['sendCb', false]]);
      await noPageErrors(alice, bob);
    });

    test('messages to an offline user arrive when it logs in', async () => {
      const a = uniq('alice');
      const c = uniq('carol');
      const alice = await loggedIn(0, a);
      await alice.h('send', c, 'one');
      await alice.h('send', c, 'two');
      await alice.expectTrace([['sendCb', false], ['sendCb', false]]);
      const carol = await open(1, c);
      await carol.h('login', c, '_no_need_token');
      await carol.expectTrace([
        ['onLoginSuccess', 0],
        ['onMessageInstantReceive', a, 0, 'one'],
        ['onMessageInstantReceive', a, 0, 'two'],
      ]);
      // acknowledged: a new session does not get them again
      await carol.acknowledged();
      const again = await open(1, c);
      await again.h('login', c, '_no_need_token');
      await again.expectTrace([['onLoginSuccess', 0]]);
      await noPageErrors(alice, carol);
    });

    test('channels: join, user list, join/leave events, messages, attributes', async () => {
      const a = uniq('alice');
      const b = uniq('bob');
      const ch = uniq('room');
      const alice = await loggedIn(0, a);
      const bob = await loggedIn(1, b);
      assert.deepEqual(await alice.h('join', ch), [ch, 'joining']);
      await alice.waitFor('onChannelUserList');
      assert.equal(await alice.h('channelState', ch), 'joined');
      await alice.h('setAttr', ch, 'topic', 't1');
      await alice.waitFor('setAttrCb');
      await bob.h('join', ch);
      await bob.waitFor('onChannelAttrUpdated');
      await alice.waitFor('onChannelUserJoined');
      await bob.h('channelSend', ch, 'hello all');
      await alice.waitFor('onMessageChannelReceive');
      await bob.waitFor('channelSendCb');
      await alice.h('delAttr', ch, 'topic');
      await alice.waitFor('delAttrCb');
      await alice.h('setAttr', ch, 'a', '1');
      await alice.waitFor('setAttrCb', []);
      await bob.waitFor('onChannelAttrUpdated', ['a', '1', 'update']);
      await alice.h('clearAttr', ch);
      await bob.waitFor('onChannelAttrUpdated', ['', '', 'clear']);
      await bob.h('leave', ch, false);
      await alice.waitFor('onChannelUserLeaved');
      await alice.h('leave', ch, true);
      await alice.expectTrace([
        ['onChannelJoined'],
        ['onChannelUserList', [[a, 0]]],
        ['onChannelAttrUpdated', 'topic', 't1', 'update'],
        ['setAttrCb'],
        ['onChannelUserJoined', b, 0],
        ['onMessageChannelReceive', b, 0, 'hello all'],
        ['onChannelAttrUpdated', 'topic', '', 'del'],
        ['delAttrCb'],
        ['onChannelAttrUpdated', 'a', '1', 'update'],
        ['setAttrCb'],
        ['onChannelAttrUpdated', '', '', 'clear'],
        ['clearAttrCb'],
        ['onChannelUserLeaved', b, 0],
        ['leaveCb'],
      ]);
      await bob.expectTrace([
        ['onChannelJoined'],
        ['onChannelUserList', [[a, 0], [b, 0]]],
        ['onChannelAttrUpdated', 'topic', 't1', 'update'],
        ['onMessageChannelReceive', b, 0, 'hello all'],
        ['channelSendCb'],
        ['onChannelAttrUpdated', 'topic', '', 'del'],
        ['onChannelAttrUpdated', 'a', '1', 'update'],
        ['onChannelAttrUpdated', '', '', 'clear'],
        ['onChannelLeaved', 0],
      ]);
      assert.equal(await bob.h('channelState', ch), 'leaved');
      await noPageErrors(alice, bob);
    });

    test('a member who disconnects leaves the channel', async () => {
      const a = uniq('alice');
      const b = uniq('bob');
      const ch = uniq('room');
      const alice = await loggedIn(0, a);
      const bob = await loggedIn(1, b);
      await alice.h('join', ch);
      await alice.waitFor('onChannelUserList');
      await bob.h('join', ch);
      await alice.waitFor('onChannelUserJoined', [b, 0]);
      await bob.page.close();
      await alice.waitFor('onChannelUserLeaved', [b, 0]);
    });

    test('calls: invite, received by peer, accept, DTMF, end', async () => {
      const a = uniq('alice');
      const b = uniq('bob');
      const alice = await loggedIn(0, a);
      const bob = await loggedIn(1, b);
      assert.deepEqual(await alice.h('invite', 'room1', b, '{"k":1}'), ['room1', b, '{"k":1}']);
      await bob.waitFor('onInviteReceived');
      await alice.waitFor('onInviteReceivedByPeer');
      await bob.h('callDo', `in:room1:${a}`, 'channelInviteAccept', 'yes');
      await alice.waitFor('onInviteAcceptedByPeer');
      await alice.h('callDo', `out:room1:${b}`, 'channelInviteDTMF', '7');
      await bob.waitFor('onInviteMsg');
      await bob.h('callDo', `in:room1:${a}`, 'channelInviteEnd');
      await alice.expectTrace([
        ['onInviteReceivedByPeer', ''],
        ['onInviteAcceptedByPeer', 'yes'],
        ['onInviteEndByPeer', ''],
      ]);
      await bob.expectTrace([
        ['onInviteReceived', { call: ['room1', a, '{"k":1}'] }],
        ['onInviteMsg', '{"msgtype":"dtmf","msgdata":"7"}'],
        ['onInviteEndByMyself', ''],
      ]);
      await noPageErrors(alice, bob);
    });

    test('calls: refused', async () => {
      const a = uniq('alice');
      const b = uniq('bob');
      const alice = await loggedIn(0, a);
      const bob = await loggedIn(1, b);
      await alice.h('invite', 'room2', b, '');
      await bob.waitFor('onInviteReceived');
      await bob.h('callDo', `in:room2:${a}`, 'channelInviteRefuse', 'busy');
      await alice.expectTrace([['onInviteReceivedByPeer', ''], ['onInviteRefusedByPeer', 'busy']]);
      await bob.expectTrace([['onInviteReceived', { call: ['room2', a, ''] }]]);
    });

    test('calls: peer offline with _require_peer_online:1 fails at once', async () => {
      const a = uniq('alice');
      const alice = await loggedIn(0, a);
      const extra = '{"_require_peer_online":1}';
      await alice.h('invite', 'room3', uniq('nobody'), extra);
      // documented difference: opensig adds the INVITE_E_* code as a second argument
      const expected = alice.sdk === 'opensig' ? ['onInviteFailed', extra, 703] : ['onInviteFailed', extra];
      await alice.expectTrace([expected]);
    });

    test('invoke: every documented function', async () => {
      const a = uniq('alice');
      const b = uniq('bob');
      const ch = uniq('room');
      const alice = await loggedIn(0, a);
      const bob = await loggedIn(1, b);
      await alice.h('join', ch);
      await alice.waitFor('onChannelUserList');
      await alice.clear();
      const ok = (extra) => ['invokeCb', '', { result: 'ok', ...extra }];
      const calls = [
        ['user_query_user_status', { account: b }, ok({ account: b, status: 1 })],
        ['user_query_user_status', { account: 'nobody' + seq }, ok({ account: 'nobody' + seq, status: 0 })],
        ['user_set_attr', { name: 'color', value: 'red' }, ok({})],
        ['user_get_attr', { account: a, name: 'color' }, ok({ account: a, name: 'color', value: 'red' })],
        ['user_get_attr_all', { account: a }, ok({ account: a, json: '{"color":"red"}' })],
        ['channel_query_num', { name: ch }, ok({ name: ch, num: 1 })],
        ['channel_query_user_isin', { name: ch, account: a }, ok({ name: ch, account: a, isin: 1 })],
        ['channel_query_user_isin', { name: ch, account: b }, ok({ name: ch, account: b, isin: 0 })],
        ['channel_query_userlist', { name: ch }, ok({ name: ch, num: 1, list: [[a, 0]] })],
        ['channel_query_userlist_all', { name: ch, num: 10 }, ok({ name: ch, num: 1, list: [[a, 0]] })],
        ['channel_set_attr', { channel: ch, name: 'k', value: 'v' }, ok({})],
        ['channel_del_attr', { channel: ch, name: 'k' }, ok({})],
        ['channel_clear_attr', { channel: ch }, ok({})],
        ['nope', {}, ['invokeCb', 'unknown_function', '']],
      ];
      const expected = [];
      for (const [fn, args, reply] of calls) {
        await alice.clear();
        await alice.h('invoke', 'io.agora.signal.' + fn, args);
        await alice.waitFor('invokeCb');
        const t = (await alice.trace()).filter((e) => e[0] === 'invokeCb');
        assert.deepEqual(t, [reply], fn);
        expected.push(fn);
      }
      // attribute changes through invoke reach the members
      await alice.clear();
      await bob.h('invoke', 'io.agora.signal.channel_set_attr', { channel: ch, name: 'x', value: 'y' });
      await alice.waitFor('onChannelAttrUpdated', ['x', 'y', 'update']);
      // channel_sendmsg with force: without joining
      await bob.h('invoke', 'io.agora.signal.channel_sendmsg', { name: ch, msg: 'forced', force: true });
      await alice.waitFor('onMessageChannelReceive', [b, 0, 'forced']);
      await noPageErrors(alice, bob);
    });
  });
}
