// Loaded after the SDK under test (the original AgoraSigSDK.min.js or opensig-classic.js).
// Records every callback, with its arguments, in window.T as [name, ...args]; the Node side
// drives it with page.evaluate(() => H.xxx(...)) and compares traces.
(function () {
  'use strict';
  const params = new URLSearchParams(location.search);
  const APP = params.get('app');
  const AP = params.get('ap');
  const T = (window.T = []);
  const ERR = (window.PAGE_ERRORS = []);
  window.addEventListener('error', (e) => ERR.push(String(e.message)));
  window.addEventListener('unhandledrejection', (e) => ERR.push('unhandledrejection: ' + String(e.reason)));

  const clone = (v) => {
    if (v === undefined) return '<undefined>';
    if (v && typeof v === 'object' && 'channelName' in v && 'peer' in v) {
      return { call: [v.channelName, v.peer, v.extra] };
    }
    try {
      return JSON.parse(JSON.stringify(v));
    } catch (e) {
      return String(v);
    }
  };
  const rec = (name) => (...args) => T.push([name, ...args.map(clone)]);

  // Mailbox polls the SDK sends (either SDK sends its frames as JSON text): a test waits for
  // the poll that acknowledges what the page has processed.
  window.GETMSG_SENT = 0;
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (typeof data === 'string' && data.includes('"user_getmsg')) window.GETMSG_SENT++;
    return send.call(this, data);
  };

  const H = (window.H = {
    signal: null,
    session: null,
    channels: {},
    calls: {},

    sdkVersion() {
      return Signal(APP).getSDKVersion();
    },

    login(account, token, app) {
      H.account = account;
      const signal = Signal(app || APP);
      signal.setup_debugging('ap_url', AP);
      H.signal = signal;
      const s = signal.login(account, token);
      H.session = s;
      s.onLoginSuccess = rec('onLoginSuccess');
      s.onLoginFailed = rec('onLoginFailed');
      s.onLogout = rec('onLogout');
      s.onMessageInstantReceive = rec('onMessageInstantReceive');
      s.onInviteReceived = (call) => {
        H.calls['in:' + call.channelName + ':' + call.peer] = call;
        H.attachCall(call, 'in');
        rec('onInviteReceived')(call);
      };
      return s.getStatus();
    },

    /** Start a barrier: a message to oneself (not recorded by its callback). Returns its
     *  text, or null when not logged in (then no server event can come anyway). */
    barrier() {
      if (!H.session || H.session.getStatus() !== 2) return null;
      const marker = 'barrier ' + Math.random().toString(36).slice(2);
      H.session.messageInstantSend(H.account, marker, () => {});
      return marker;
    },

    /** A request and its reply on this session's connection: the server has processed
     *  everything this page sent before. */
    roundTrip() {
      return new Promise((resolve) =>
        H.session.invoke('io.agora.signal.user_query_user_status', { account: H.account }, () => resolve(true)),
      );
    },

    status() {
      return H.session.getStatus();
    },

    logout() {
      H.session.logout();
    },

    send(peer, msg) {
      H.session.messageInstantSend(peer, msg, rec('sendCb'));
    },

    invoke(func, args) {
      H.session.invoke(func, args, rec('invokeCb'));
    },

    join(name) {
      const c = H.session.channelJoin(name);
      H.channels[name] = c;
      for (const cb of [
        'onChannelJoined',
        'onChannelJoinFailed',
        'onChannelLeaved',
        'onChannelUserJoined',
        'onChannelUserLeaved',
        'onChannelUserList',
        'onChannelAttrUpdated',
        'onMessageChannelReceive',
      ]) {
        c[cb] = rec(cb);
      }
      return [c.name, c.state];
    },

    channelState(name) {
      return H.channels[name].state;
    },

    channelSend(name, msg) {
      H.channels[name].messageChannelSend(msg, rec('channelSendCb'));
    },

    leave(name, withCb) {
      if (withCb) H.channels[name].channelLeave(rec('leaveCb'));
      else H.channels[name].channelLeave();
    },

    setAttr(name, k, v) {
      H.channels[name].channelSetAttr(k, v, rec('setAttrCb'));
    },

    delAttr(name, k) {
      H.channels[name].channelDelAttr(k, rec('delAttrCb'));
    },

    clearAttr(name) {
      H.channels[name].channelClearAttr(rec('clearAttrCb'));
    },

    attachCall(call, dir) {
      for (const cb of [
        'onInviteReceivedByPeer',
        'onInviteAcceptedByPeer',
        'onInviteRefusedByPeer',
        'onInviteFailed',
        'onInviteEndByPeer',
        'onInviteEndByMyself',
        'onInviteMsg',
      ]) {
        call[cb] = rec(cb);
      }
    },

    invite(channel, peer, extra) {
      const call = H.session.channelInviteUser2(channel, peer, extra);
      H.calls['out:' + channel + ':' + peer] = call;
      H.attachCall(call, 'out');
      return [call.channelName, call.peer, call.extra];
    },

    callDo(key, method, ...args) {
      H.calls[key][method](...args);
    },
  });
})();
