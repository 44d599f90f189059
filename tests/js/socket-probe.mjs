// A real socket.io-client 4 socket, driven over stdin/stdout by tests/test_realtime.py
// and bench/realtime.py.
//
//   node socket-probe.mjs --url http://127.0.0.1:PORT [--auth JSON] [--headers JSON]
//                         [--transports websocket,polling] [--sockets N]
//
// Every event the socket receives is printed as one JSON line
// {"event": NAME, "data": FIRST_ARGUMENT, "at": EPOCH_MS}, including "connect",
// "connect_error" (data: {message}) and "disconnect". Each stdin line is a command:
// {"emit": NAME, "data": VALUE} or {"close": true}. With --sockets N, N sockets
// connect (nothing is printed per socket) and {"event": "all_connected", "data": N}
// or {"event": "connect_failed"} is printed once; they stay open until stdin closes.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    auth: { type: 'string', default: '{}' },
    headers: { type: 'string', default: '{}' },
    transports: { type: 'string', default: '' },
    sockets: { type: 'string', default: '' },
  },
});

const print = (event, data) =>
  process.stdout.write(JSON.stringify({ event, data: data ?? null, at: Date.now() }) + '\n');

const options = {
  auth: JSON.parse(values.auth),
  extraHeaders: JSON.parse(values.headers),
  reconnection: false,
  forceNew: true,
  timeout: 60000,
  ...(values.transports ? { transports: values.transports.split(',') } : {}),
};

if (values.sockets) {
  const wanted = Number(values.sockets);
  const sockets = [];
  let connected = 0;
  for (let i = 0; i < wanted; i++) {
    const socket = io(values.url, { ...options, auth: { ...options.auth } });
    socket.on('connect', () => {
      connected += 1;
      if (connected === wanted) print('all_connected', wanted);
    });
    socket.on('connect_error', (err) => print('connect_failed', { message: err.message, index: i }));
    sockets.push(socket);
  }
  createInterface({ input: process.stdin }).on('close', () => {
    for (const socket of sockets) socket.close();
    process.exit(0);
  });
} else {
  const socket = io(values.url, options);
  socket.onAny((event, data) => print(event, data));
  socket.on('connect', () => print('connect', { id: socket.id }));
  socket.on('connect_error', (err) => print('connect_error', { message: err.message }));
  socket.on('disconnect', (reason) => print('disconnect', { reason }));
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const command = JSON.parse(line);
    if (command.close) {
      socket.close();
      process.exit(0);
    }
    socket.emit(command.emit, command.data);
  });
  lines.on('close', () => {
    socket.close();
    process.exit(0);
  });
}
