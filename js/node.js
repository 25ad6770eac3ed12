// opensig in Node.js (20 and later), without a bundler: `import Signal from 'opensig'`.
// The wasm is read from the package itself. WebSocket: the global one (Node 22 and later), or
// the class the app passes: `Signal(appid, { server, WebSocket })` with `ws`'s WebSocket.
// `/getaddr` goes through Node's fetch, binary frames through its DecompressionStream.
import { readFileSync } from 'node:fs';
import * as bg from './opensig_bg.js';

const module = new WebAssembly.Module(readFileSync(new URL('./opensig_bg.wasm', import.meta.url)));
const imports = {};
for (const { module: name } of WebAssembly.Module.imports(module)) {
  if (!(name in imports)) {
    imports[name] = name === './opensig_bg.js' ? bg : await import(new URL(name, import.meta.url).href);
  }
}
const instance = new WebAssembly.Instance(module, imports);
bg.__wbg_set_wasm(instance.exports);
instance.exports.__wbindgen_start();

const Impl = bg.Signal;

export function Signal(appid, options) {
  if (typeof globalThis.WebSocket !== 'function' && typeof options?.WebSocket !== 'function') {
    throw new TypeError(
      'opensig: this Node.js has no global WebSocket (Node 22 has one); pass a WebSocket class: ' +
        "Signal(appid, { server: 'ws://host:port/', WebSocket }) with `import { WebSocket } from 'ws'`",
    );
  }
  return new Impl(appid, options);
}
Signal.prototype = Impl.prototype;

export const { Session, Channel, Call } = bg;
export default Signal;
