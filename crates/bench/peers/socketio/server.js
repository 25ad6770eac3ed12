// The Socket.IO peer of opensig-bench: rooms (channels) and direct messages, the way a
// signaling app built on Socket.IO does it. WebSocket transport only, no compression.
//   node server.js <port>     (0 = any free port; prints "socket.io listening <port>")
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 60000,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  const user = String(socket.handshake.query.user || socket.id);
  socket.data.user = user;
  socket.join('u:' + user); // direct messages reach every socket of the user
  socket.on('join', (room, ack) => {
    socket.join('r:' + room);
    if (typeof ack === 'function') ack();
  });
  socket.on('leave', (room, ack) => {
    socket.leave('r:' + room);
    if (typeof ack === 'function') ack();
  });
  // a channel message goes to every member, the sender included
  socket.on('msg', (room, data) => io.to('r:' + room).emit('msg', room, data));
  socket.on('dm', (to, data) => io.to('u:' + to).emit('dm', user, data));
});

httpServer.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`socket.io listening ${httpServer.address().port}`);
});
// a benchmark peer: never outlive the run that started it
setTimeout(() => process.exit(0), 60 * 60 * 1000).unref();
