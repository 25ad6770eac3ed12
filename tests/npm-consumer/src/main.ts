// A typical app: ESM import, the 1.4 API with callback properties, plus the promise API.
import Signal, { type Session, type Channel, type SignalError, type KeptMessage, type PeerOnlineState } from 'opensig';

const out = document.getElementById('result')!;
const ws = new URLSearchParams(location.search).get('ws')!;
const tag = Math.random().toString(36).slice(2, 8);

function login(account: string): Promise<Session> {
  const signal = Signal('npmapp');
  signal.setup_debugging('ap_url', ws);
  const session = signal.login(account, '_no_need_token');
  return new Promise((resolve, reject) => {
    session.onLoginSuccess = () => resolve(session);
    session.onLoginFailed = (code: number) => reject(new Error('login failed ' + code));
  });
}

async function main(): Promise<string> {
  const alice = await login('alice' + tag);
  const bob = await login('bob' + tag);
  const received = new Promise<string>((resolve) => {
    bob.onMessageInstantReceive = (account: string, _uid: number, msg: string) => resolve(`${account}:${msg}`);
  });
  await alice.messageInstantSend('bob' + tag, 'from a bundle');
  const got = await received;
  const room: Channel = bob.channelJoin('npm' + tag);
  await room.ready;
  const members = await new Promise<number>((resolve) => {
    room.onChannelUserList = (users) => resolve(users.length);
    if (room.state === 'joined') resolve(1);
  });
  try {
    await alice.messageInstantSend('bob' + tag, 'x'.repeat(9000));
    return 'oversize message was accepted';
  } catch (e) {
    if ((e as SignalError).code !== 1005) return 'wrong code ' + (e as SignalError).code;
  }
  const status = alice.getStatus();
  // the Android/iOS extras, typed
  const online: number = await alice.queryUserStatus('bob' + tag);
  const inRoom: boolean = await alice.channelQueryUserIsIn('npm' + tag, 'bob' + tag);
  // opensig's presence subscriptions, typed
  let changed: Record<string, PeerOnlineState> = {};
  alice.onPeersOnlineStatusChanged = (s) => (changed = { ...changed, ...s });
  const watched = await alice.subscribePeersOnlineStatus(['bob' + tag]);
  if (watched['bob' + tag] !== 'ONLINE' || changed['bob' + tag] !== 'ONLINE') return 'presence: ' + JSON.stringify(watched);
  // opensig's channel history, typed
  room.onMessageChannelLost = (count: number) => console.warn(`${count} lost`);
  await room.messageChannelSend('kept');
  const kept: KeptMessage[] = await room.history(5);
  await alice.logout();
  return `ok ${got} members=${members} status=${status} online=${online} inRoom=${inRoom} kept=${kept.map((k) => k.msg).join(',')}`;
}

main().then(
  (r) => (out.textContent = r),
  (e) => (out.textContent = 'error ' + e),
);
