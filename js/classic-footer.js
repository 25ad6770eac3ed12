  // ---- opensig classic entry: instantiate synchronously, then expose `Signal` like
  // AgoraSigSDK.min.js does (UMD: CommonJS, AMD, or a global), callable with or without `new`.
  // the module, one character per byte; length and FNV-1a hash show it arrived unchanged
  var n = WASM_BYTES.length, bytes = new Uint8Array(n), h = 0x811c9dc5, c, ok = n === WASM_LENGTH;
  for (var i = 0; i < n && ok; i++) {
    c = WASM_BYTES.charCodeAt(i);
    ok = c < 256;
    bytes[i] = c;
    h = Math.imul(h ^ c, 16777619);
  }
  if (!ok || h >>> 0 !== WASM_FNV) {
    throw new Error('opensig-classic.js was not read as the UTF-8 it is (its WebAssembly is ' +
      'corrupt): keep its byte order mark, serve it as "text/javascript; charset=utf-8", or ' +
      'load it with <script charset="utf-8">');
  }
  WASM_BYTES = null;
  var instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), importObject());
  __glue.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start();
  var Impl = __glue.Signal;
  function Signal(appid, options) {
    return new Impl(appid, options);
  }
  Signal.prototype = Impl.prototype;
  Signal.Signal = Signal;
  Signal.Session = __glue.Session;
  Signal.Channel = __glue.Channel;
  Signal.Call = __glue.Call;
  if (typeof module === 'object' && module && module.exports) module.exports = Signal;
  else if (typeof define === 'function' && define.amd) define(function () { return Signal; });
  else root.Signal = Signal;
