// A webhook receiver for the browser suites: takes opensig-server's deliveries, checks each
// signature with Node's own HMAC (not the server's code), and keeps the events. Loopback only;
// stops when its parent shell does.
//   node webhook-sink.mjs <port> <secret>
//   POST /hook      a delivery (200 when the signature verifies, 401 otherwise)
//   GET  /events    {"events": [...], "bad_signatures": n}
import crypto from 'node:crypto';
import http from 'node:http';

const [port, secret] = process.argv.slice(2);
const events = [];
let bad = 0;

function verify(header, body) {
  const parts = Object.fromEntries(String(header || '').split(',').map((p) => p.split('=')));
  const t = Number(parts.t);
  const sig = Buffer.from(parts.v1 || '', 'hex');
  if (!t || Math.abs(Date.now() / 1000 - t) > 300) return false;
  const mac = crypto.createHmac('sha256', secret).update(`${t}.${body}`).digest();
  return sig.length === mac.length && crypto.timingSafeEqual(sig, mac);
}

http
  .createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/events') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ events, bad_signatures: bad }));
      return;
    }
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (!verify(req.headers['x-opensig-signature'], body)) {
        bad += 1;
        res.writeHead(401).end('bad signature');
        return;
      }
      events.push(...JSON.parse(body).events);
      res.writeHead(200).end('ok');
    });
  })
  .listen(Number(port), '127.0.0.1');
