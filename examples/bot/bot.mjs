// A bot on the opensig SDK in Node.js: logs in, joins a channel, answers what is said there
// and what is sent to it, and leaves cleanly on SIGINT/SIGTERM.
//
//   OPENSIG_SERVER=ws://127.0.0.1:8080/ OPENSIG_APP=myapp BOT_CHANNEL=lobby node bot.mjs
//
// Messages it understands: "ping" (answers "pong"), "time" (the server time of the bot), and
// anything else is echoed back. It reconnects by itself (the SDK's own reconnects) and gives
// up after an hour without a server.
import Signal from 'opensig';
import { WebSocket } from 'ws';

const server = process.env.OPENSIG_SERVER || 'ws://127.0.0.1:8080/';
const app = process.env.OPENSIG_APP || 'demo';
const account = process.env.BOT_ACCOUNT || 'bot';
const channelName = process.env.BOT_CHANNEL || 'lobby';
const token = process.env.OPENSIG_TOKEN || '_no_need_token';

function answer(text) {
  const t = String(text).trim();
  if (t === 'ping') return 'pong';
  if (t === 'time') return new Date().toISOString();
  return `you said: ${t}`;
}

// the global WebSocket where Node has one (22+), else the `ws` package's
const signal = Signal(app, { server, WebSocket: globalThis.WebSocket || WebSocket });
const session = signal.login(account, token, 1000, 3600);
session.onLoginFailed = (code) => {
  console.error(`bot: login failed (${code}: ${signal.errorText(code)})`);
  process.exit(1);
};
session.onLogout = (code) => {
  console.log(`bot: logged out (${code})`);
  process.exit(code === 101 ? 0 : 1);
};
session.onReconnecting = (n) => console.log(`bot: reconnecting (${n})`);
session.onReconnected = () => console.log('bot: back');
session.onMessageInstantReceive = (from, _uid, text) => {
  if (from !== account) session.messageInstantSend(from, answer(text));
};

await session.ready;
const channel = session.channelJoin(channelName);
channel.onMessageChannelReceive = (from, _uid, text) => {
  if (from !== account) channel.messageChannelSend(`@${from} ${answer(text)}`);
};
channel.onChannelUserJoined = (who) => channel.messageChannelSend(`welcome, ${who}`);
await channel.ready;
console.log(`bot: ${account} in ${channelName} on ${server}`);

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => session.logout());
