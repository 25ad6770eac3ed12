// A TCP proxy in front of opensig-server whose connections can be cut on request, to test
// reconnects as a real network failure (no close frame). Loopback only; stops by itself.
//   node cut-proxy.mjs <listen-port> <upstream-port> <control-port>
//   GET http://127.0.0.1:<control-port>/cut    destroys every proxied connection
//   GET http://127.0.0.1:<control-port>/down   ...and refuses new ones (the node "went away")
//   GET http://127.0.0.1:<control-port>/up     accepts connections again
import net from 'node:net';
import http from 'node:http';

const [listen, upstream, control] = process.argv.slice(2).map(Number);
const live = new Set();
let cuts = 0;
let down = false;

net
  .createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const server = net.connect(upstream, '127.0.0.1');
    const pair = [client, server];
    live.add(pair);
    const end = () => {
      live.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on('error', end).on('close', end);
    server.on('error', end).on('close', end);
    client.pipe(server);
    server.pipe(client);
  })
  .listen(listen, '127.0.0.1');

http
  .createServer((req, res) => {
    res.setHeader('access-control-allow-origin', '*');
    if (req.url.startsWith('/up')) {
      down = false;
      res.end(JSON.stringify({ down }));
      return;
    }
    if (req.url.startsWith('/cut') || req.url.startsWith('/down')) {
      if (req.url.startsWith('/down')) down = true;
      const n = live.size;
      for (const [a, b] of live) {
        a.resetAndDestroy ? a.resetAndDestroy() : a.destroy();
        b.destroy();
      }
      live.clear();
      cuts++;
      res.end(JSON.stringify({ cut: n, cuts }));
    } else {
      res.end(JSON.stringify({ live: live.size, cuts, down }));
    }
  })
  .listen(control, '127.0.0.1', () => console.log(`cut-proxy :${listen} -> :${upstream}, control :${control}`));

setTimeout(() => process.exit(0), 30 * 60 * 1000).unref();
