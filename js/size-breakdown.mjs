// The SDK's wasm by where its bytes come from: twiggy's per-item sizes (CSV, of a build that
// kept its names) summed by crate and module. Run by scripts/sdk-size-breakdown.
import fs from 'node:fs';
const rows = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n').slice(1);
const groups = new Map();
let total = 0;
const group = (name) => {
  if (/function names|producers|name section|local names|custom section/.test(name)) return null;
  if (/data segment|^"?elem|^"?table|^"?memory|^"?global|^"?type\[|^"?import |^"?export /.test(name)) return 'static data, tables, import and export entries';
  if (/opensig_protocol\[[0-9a-f]+\]::client/.test(name)) return 'client core (crates/protocol client: state machine)';
  if (/opensig_protocol/.test(name)) return 'other protocol code (codes, msg, json, limits, token)';
  if (/externref shim|multivalue shim/.test(name) || /opensig\[[0-9a-f]+\]::(session|signal|channel|call)\b/.test(name)) return 'SDK classes (Signal, Session, Channel, Call methods)';
  if (/opensig\[[0-9a-f]+\]::/.test(name)) return 'SDK IO and dispatch (transport, dispatch, hub, js, log, promise)';
  if (/wasm_bindgen.*closures|convert__closures|invoke/.test(name)) return 'wasm-bindgen closure shims';
  if (/^"?(js_sys|web_sys)|js_sys\[|web_sys\[/.test(name)) return 'js-sys / web-sys glue';
  if (/wasm_bindgen|__wbindgen|__externref|__wbg/.test(name)) return 'wasm-bindgen runtime and exports';
  if (/talc/.test(name)) return 'allocator (talc)';
  if (/gloo/.test(name)) return 'gloo-timers';
  if (/^"?<?(core|alloc|std)\[|^"?(core|alloc|std)::|<(core|alloc|std)\[/.test(name)) return 'core / alloc (strings, vectors, formatting)';
  return 'other (unnamed functions, code of several crates inlined together)';
};
for (const r of rows) {
  const m = r.match(/^(.*),(\d+),([\d.]+),[^,]*,[^,]*$/);
  if (!m) continue;
  const g = group(m[1]);
  if (!g) continue;
  const n = Number(m[2]);
  total += n;
  groups.set(g, (groups.get(g) || 0) + n);
}
for (const [g, n] of [...groups].sort((a, b) => b[1] - a[1])) console.log(`| ${g} | ${n.toLocaleString('en')} | ${(100 * n / total).toFixed(1)} % |`);
console.log(`| total (code and data, before stripping names) | ${total.toLocaleString('en')} | |`);
