  // ---- opensig classic entry: instantiate synchronously, then expose `Signal` like
  // AgoraSigSDK.min.js does (UMD: CommonJS, AMD, or a global), callable with or without `new`.
  var raw = atob(WASM_BASE64);
  var bytes = new Uint8Array(raw.length);
  for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  wasm_bindgen.initSync({ module: bytes });
  var Impl = wasm_bindgen.Signal;
  function Signal(appid, options) {
    return new Impl(appid, options);
  }
  Signal.prototype = Impl.prototype;
  Signal.Signal = Signal;
  Signal.Session = wasm_bindgen.Session;
  Signal.Channel = wasm_bindgen.Channel;
  Signal.Call = wasm_bindgen.Call;
  if (typeof module === 'object' && module && module.exports) module.exports = Signal;
  else if (typeof define === 'function' && define.amd) define(function () { return Signal; });
  else root.Signal = Signal;
