// Types of the opensig SDK: the Agora Signaling Web SDK 1.4 API (Signal, Session, Channel,
// Call), plus opensig's additions (promises, onReconnecting/onReconnected/onError, `ready`).

/**
 * opensig: a watched account's presence. `UNREACHABLE`: its connection dropped less than the
 * server's grace period (5 s) ago and it may be back; `OFFLINE`: logged out, kicked, or away
 * past the grace period.
 */
export type PeerOnlineState = 'ONLINE' | 'UNREACHABLE' | 'OFFLINE';

/** A rejection of an opensig promise: `code` is a documented error code, `reason` the error string. */
export interface SignalError extends Error {
  /** e.g. 1004 GENERAL_E_WRONG_PARAM, 1005 GENERAL_E_LARGE_PARAM, 703 INVITE_E_PEEROFFLINE. */
  code: number;
  /** The server's (or the SDK's) error string, e.g. `"too_large"`, `"not_in_channel"`. */
  reason: string;
  /** The reply body, when the server sent one. */
  response?: unknown;
}

/** Options of `Signal(appid, options)`. */
export interface SignalOptions {
  /** Connect straight to this WebSocket URL (like `setup_debugging('ap_url', url)`). */
  server?: string;
  /** Several WebSocket URLs, tried round-robin. */
  servers?: string[];
  /** LBS base URL(s) asked `GET <lbs>/getaddr?vid=<appid>`; default: the page's origin. */
  lbs?: string | string[];
  /**
   * The WebSocket class to connect with; default: the global `WebSocket`. In Node.js before
   * 22 (no global one), pass one: `import { WebSocket } from 'ws'`.
   */
  WebSocket?: new (url: string) => unknown;
}

/** A `[account, uid]` pair of a member list. */
export type Member = [string, number];

export declare class SignalImpl {
  constructor(appid: string, options?: SignalOptions);
  readonly appid: string;
  readonly vid: string;
  /**
   * Log in. Returns the Session at once; its methods are usable immediately (calls made before
   * the login completes are sent once it does).
   * @param reconnect_count reconnect attempts before giving up (default 10)
   * @param reconnect_time how long to keep reconnecting after a loss, in **seconds** as the
   *   1.4 docs say (default 30); a value of 1000 or more is read as milliseconds (what the
   *   original's code did), so `300000` still means 5 minutes
   */
  login(account: string, token: string, reconnect_count?: number, reconnect_time?: number): Session;
  /**
   * Receives every log line of this Signal's sessions at or above the `setDoLog` level,
   * whether or not console printing is enabled (the Android/iOS `onLog`).
   */
  onLog?: ((txt: string) => void) | null;
  /** `level`: `"DEBUG"` (default, everything), `"INFO"`, `"WARNING"`. */
  setDoLog(enabled?: boolean, level?: 'DEBUG' | 'INFO' | 'WARNING'): void;
  /** `"1.4.0"` */
  getSDKVersion(): string;
  /** `1010400000` */
  getSDKVersion_int(): number;
  /** `setup_debugging('ap_url', 'ws://host:port/')`: connect to this URL (before `login`). */
  setup_debugging(kind: 'ap_url' | 'ap' | 'lbs' | string, value: string): void;
  /** Alias of `setup_debugging`. */
  setUpDebugging(kind: 'ap_url' | 'ap' | 'lbs' | string, value: string): void;
  /** A sentence for a code or error string: `errorText(703)` → `"INVITE_E_PEEROFFLINE (703): the peer is offline"`. */
  errorText(code: number | string): string;
}

/** `Signal(appid)` or `new Signal(appid)`. */
export interface SignalFactory {
  (appid: string, options?: SignalOptions): SignalImpl;
  new (appid: string, options?: SignalOptions): SignalImpl;
  prototype: SignalImpl;
}
export declare const Signal: SignalFactory;
export default Signal;

/** 0 not logged in, 1 logging in, 2 logged in, 3 reconnecting. */
export type Status = 0 | 1 | 2 | 3;

export declare class Session {
  private constructor();
  readonly account: string;
  /** The uid the server gave at the last login (0 before; always 0 with opensig-server). */
  readonly uid: number;
  /** Same as `getStatus()`. */
  readonly state: Status;
  /** Resolves with the uid when logged in; rejects with the login-failure code. */
  readonly ready: Promise<number>;

  /** `uid` is always 0. Also fires after each successful reconnect. */
  onLoginSuccess?: ((uid: number) => void) | null;
  /** 201 network, 204 token expired, 206 token wrong, 207 kicked, 209 bad account. */
  onLoginFailed?: ((ecode: number) => void) | null;
  /**
   * 101 logout, 102 connection lost / server closed / reconnects ran out, 103 logged in
   * elsewhere, 105 a re-login found the token expired (renew it: `renewToken`), 107 a re-login
   * found the token rejected.
   */
  onLogout?: ((ecode: number) => void) | null;
  onMessageInstantReceive?: ((account: string, uid: number, msg: string) => void) | null;
  onInviteReceived?: ((call: Call) => void) | null;
  /** The connection was lost; reconnect attempt `nretry` (1, 2, …) starts. */
  onReconnecting?: ((nretry: number) => void) | null;
  /** Logged in again after a lost connection (channels are rejoined). */
  onReconnected?: (() => void) | null;
  /** Any failed operation: `name` is the method, `ecode` a documented code, `desc` the error string. */
  onError?: ((name: string, ecode: number, desc: string) => void) | null;
  /** The token in use expires in 30 s or less: hand the session a new one with `renewToken`. */
  onTokenWillExpire?: (() => void) | null;
  /** A message was accepted by the server (`msgID`: the app's, or one the SDK made up). */
  onMessageSendSuccess?: ((messageID: string) => void) | null;
  /** A message was refused (`ecode`: e.g. 1001 rate limited, 1005 too large). */
  onMessageSendError?: ((messageID: string, ecode: number) => void) | null;
  /** Result of `queryUserStatus`: `status` 1 online, 0 offline. */
  onQueryUserStatusResult?: ((name: string, status: number) => void) | null;
  /** Result of `getAttr` / `getUserAttr`. */
  onUserAttrResult?: ((account: string, name: string, value: string) => void) | null;
  /** Result of `getAttrAll` / `getUserAttrAll`: `value` is the JSON text of every attribute. */
  onUserAttrAllResult?: ((account: string, value: string) => void) | null;
  /** Result of `channelQueryUserNum` (`ecode` 0 on success). */
  onChannelQueryUserNumResult?: ((channelID: string, ecode: number, num: number) => void) | null;
  /** Result of `channelQueryUserIsIn`: `isIn` 1 or 0. */
  onChannelQueryUserIsIn?: ((channelID: string, account: string, isIn: number) => void) | null;
  /**
   * opensig: watched accounts' states — all of them after `subscribePeersOnlineStatus`, then
   * each change (those missed while reconnecting, once it is back).
   */
  onPeersOnlineStatusChanged?: ((status: Record<string, PeerOnlineState>) => void) | null;

  getStatus(): Status;
  /** Ends in `onLogout(101)`. */
  logout(): Promise<number>;
  /**
   * `cb(isError)`: `false` when sent, `true` when refused (as 1.4.0); also
   * `onMessageSendSuccess(msgID)` / `onMessageSendError(msgID, ecode)`.
   * `messageInstantSend(peer, msg, msgID)` (Android style) works too.
   */
  messageInstantSend(peer: string, msg: string, cb?: ((isError: boolean) => void) | string, msgID?: string): Promise<void>;
  /** `invoke('io.agora.signal.<function>', args, cb(err, resp))`; resolves with the reply object. */
  invoke(func: string, args: Record<string, unknown>, cb?: (err: string, resp: any) => void): Promise<any>;
  /** Online status of `account` → `onQueryUserStatusResult`; resolves with 1 or 0. */
  queryUserStatus(account: string): Promise<number>;
  /** Set one of this user's attributes (`_conn_timeout`: 20–120 s; an empty value deletes). */
  setAttr(name: string, value: string): Promise<void>;
  /** One of this user's attributes → `onUserAttrResult`; resolves with the value ("" when unset). */
  getAttr(name: string): Promise<string>;
  /** All of this user's attributes → `onUserAttrAllResult`; resolves with them as an object. */
  getAttrAll(): Promise<Record<string, string>>;
  /** One attribute of `account` → `onUserAttrResult`. */
  getUserAttr(account: string, name: string): Promise<string>;
  /** All attributes of `account` → `onUserAttrAllResult`. */
  getUserAttrAll(account: string): Promise<Record<string, string>>;
  /** Member count of a channel → `onChannelQueryUserNumResult`; resolves with it. */
  channelQueryUserNum(channelID: string): Promise<number>;
  /** Whether `account` is in a channel → `onChannelQueryUserIsIn`; resolves with a boolean. */
  channelQueryUserIsIn(channelID: string, account: string): Promise<boolean>;
  /** A channel message without joining (Android's `messageChannelSendForce`). */
  messageChannelSendForce(channelID: string, msg: string, cb?: (() => void) | string, msgID?: string): Promise<void>;
  /**
   * Use `token` for every later (re)login. Rejects (code 206 / 204), keeping the previous
   * token, when it is not this app's and account's or has expired.
   */
  renewToken(token: string): Promise<void>;
  /**
   * opensig (RTM's `subscribePeersOnlineStatus`): watch these accounts' presence (at most 512
   * per session; at most 10 of the three presence calls per 5 s). `onPeersOnlineStatusChanged`
   * fires with their states now, then with every change; resolves with the states now.
   * Rejects with `too_many_peers` (1001) past the limit, `rate_limited` (1001) too often.
   * Kept across reconnects, forgotten at logout.
   */
  subscribePeersOnlineStatus(accounts: string[]): Promise<Record<string, PeerOnlineState>>;
  /** opensig: stop watching these accounts. */
  unsubscribePeersOnlineStatus(accounts: string[]): Promise<void>;
  /** opensig: these accounts' states now, without watching them. */
  queryPeersOnlineStatus(accounts: string[]): Promise<Record<string, PeerOnlineState>>;
  /**
   * The Channel of `name`: a channel this session has joined or is joining is returned as the
   * same object (no second membership), so joining in every `onLoginSuccess` is safe.
   */
  channelJoin(name: string): Channel;
  /** `extra` is usually JSON text, e.g. `'{"_require_peer_online":1,"_timeout":30}'`. */
  channelInviteUser2(channelID: string, peer: string, extra?: string | Record<string, unknown>): Call;
}

export type ChannelState = 'joining' | 'joined' | 'leaved';

/** A channel message as the channel's history keeps it. */
export interface KeptMessage {
  /** Its number among the channel's messages (1, 2, …). */
  n: number;
  /** Its sequence among all the channel's events. */
  seq: number;
  /** When the server accepted it (ms since the epoch). */
  ts: number;
  account: string;
  msg: string;
  /** The send's identity, when it was sent with a message id (the same for every copy of
   *  one send: a resend the server took again after Redis lost the first copy's write). */
  id?: number;
}

export declare class Channel {
  private constructor();
  readonly name: string;
  readonly state: ChannelState;
  /** Resolves when joined; rejects with the join error. */
  readonly ready: Promise<void>;

  onChannelJoined?: (() => void) | null;
  /** `ecode` is the server's error string, as in 1.4.0. */
  onChannelJoinFailed?: ((ecode: string) => void) | null;
  /** 0 after `channelLeave()` without a callback; 604 when rejoining after a reconnect failed. */
  onChannelLeaved?: ((ecode: number) => void) | null;
  onChannelUserJoined?: ((account: string, uid: number) => void) | null;
  onChannelUserLeaved?: ((account: string, uid: number) => void) | null;
  /** The latest 200 members, the joiner included. */
  onChannelUserList?: ((users: Member[]) => void) | null;
  /** `type`: `"update"`, `"del"` or `"clear"`. */
  onChannelAttrUpdated?: ((name: string, value: string, type: 'update' | 'del' | 'clear') => void) | null;
  /**
   * Messages are recovered after a reconnect: what was said while this session was away
   * arrives through `onMessageChannelReceive`, in order, once, before live ones. When the
   * channel no longer keeps some of it (its `_history` is smaller, or 0), this says how many
   * are gone first (opensig).
   */
  onMessageChannelLost?: ((count: number) => void) | null;
  onMessageChannelReceive?: ((account: string, uid: number, msg: string) => void) | null;

  /**
   * The channel's latest `limit` kept messages (default and most: the server's
   * `channel_history_max_messages`), oldest first; members only (opensig).
   */
  history(limit?: number): Promise<KeptMessage[]>;
  /**
   * `cb()` whatever the outcome (as 1.4.0); the promise (and the session's
   * `onMessageSendSuccess` / `onMessageSendError`) tell success from failure.
   */
  messageChannelSend(msg: string, cb?: (() => void) | string, msgID?: string): Promise<void>;
  /** Send without being a member (e.g. after leaving). */
  messageChannelSendForce(msg: string, cb?: (() => void) | string, msgID?: string): Promise<void>;
  /** `cb()` if given, otherwise `onChannelLeaved(0)`. */
  channelLeave(cb?: () => void): Promise<void>;
  channelSetAttr(name: string, value: string, cb?: () => void): Promise<void>;
  channelDelAttr(name: string, cb?: () => void): Promise<void>;
  channelClearAttr(cb?: () => void): Promise<void>;
}

export declare class Call {
  private constructor();
  readonly channelName: string;
  readonly peer: string;
  readonly extra: any;
  /** For an outgoing call: resolves when the server took the invitation. */
  readonly ready: Promise<void>;

  /** The peer received the invitation (its SDK acknowledged it). */
  onInviteReceivedByPeer?: ((extra: any) => void) | null;
  onInviteAcceptedByPeer?: ((extra: any) => void) | null;
  onInviteRefusedByPeer?: ((extra: any) => void) | null;
  /**
   * The error string, or the invitation's `extra` when the server failed it; opensig adds the
   * code (703 INVITE_E_PEEROFFLINE, 704 INVITE_E_TIMEOUT, …) as a second argument.
   */
  onInviteFailed?: ((extra: any, ecode?: number) => void) | null;
  /** `ecode` (opensig) is set when the server ended a ringing invitation (704 timeout). */
  onInviteEndByPeer?: ((extra: any, ecode?: number) => void) | null;
  onInviteEndByMyself?: ((extra: any) => void) | null;
  /** DTMF arrives as `'{"msgtype":"dtmf","msgdata":"…"}'`. */
  onInviteMsg?: ((extra: any) => void) | null;

  channelInviteAccept(extra?: string): Promise<void>;
  channelInviteRefuse(extra?: string): Promise<void>;
  channelInviteDTMF(dtmf: string): Promise<void>;
  channelInviteEnd(extra?: string): Promise<void>;
}
