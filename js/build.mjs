// Post-processing of the two wasm-pack outputs into the published package:
// pkg/index.js + index.d.ts + package.json fields, pkg/opensig-classic.js, and a size report.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [pkgDir, classicDir] = process.argv.slice(2);
const ORIGINAL_GZIP = 42608; // AgoraSigSDK.min.js 1.4.0, gzip -9

// 1. classic script: no-modules glue + the wasm inline + synchronous init + UMD footer.
// The wasm is embedded as a template literal with one character per byte (U+0000-U+00FF;
// only ` \ $ CR and NUL escaped): 20 % less after gzip than base64. The file is UTF-8 with a
// byte order mark, which browsers honour before any page or HTTP charset, so a page in a
// legacy encoding still reads it right; the footer checks length and an FNV-1a hash anyway
// and says what to fix if the bytes arrived changed.
const glue = fs.readFileSync(path.join(classicDir, 'opensig.js'), 'utf8');
const wasm = fs.readFileSync(path.join(classicDir, 'opensig_bg.wasm'));
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
const footer = fs.readFileSync(path.join(here, 'classic-footer.js'), 'utf8');
const ESCAPES = { 0x60: '\\`', 0x5c: '\\\\', 0x24: '\\$', 0x0d: '\\r', 0x00: '\\x00' };
const latin1 = Array.from(wasm, (b) => ESCAPES[b] || String.fromCharCode(b)).join('');
let fnv = 0x811c9dc5;
for (const b of wasm) fnv = Math.imul(fnv ^ b, 16777619) >>> 0;
const classic =
  '\ufeff' +
  `/*! opensig ${version} - AgoraSig 1.4 web API in Rust/WebAssembly - drop-in for AgoraSigSDK.min.js */\n` +
  `(function (root) {\n"use strict";\n${glue}\n` +
  `var WASM_LENGTH = ${wasm.length}, WASM_FNV = ${fnv};\nvar WASM_BYTES = \`${latin1}\`;\n` +
  `${footer}\n})(typeof self !== 'undefined' ? self : this);\n`;
fs.writeFileSync(path.join(pkgDir, 'opensig-classic.js'), classic, 'utf8');

// 2. ESM entry, hand-written types, package.json
fs.copyFileSync(path.join(here, 'index.js'), path.join(pkgDir, 'index.js'));
fs.copyFileSync(path.join(here, 'node.js'), path.join(pkgDir, 'node.js'));
fs.copyFileSync(path.join(here, 'opensig.d.ts'), path.join(pkgDir, 'index.d.ts'));
const pj = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
pj.name = 'opensig';
pj.description = 'Drop-in replacement for the Agora Signaling Web SDK 1.4 (Rust/WebAssembly), for opensig-server';
pj.type = 'module';
pj.main = 'index.js';
pj.module = 'index.js';
pj.types = 'index.d.ts';
// Node.js (no bundler) takes node.js, which reads the wasm itself; bundlers take index.js
pj.exports = {
  '.': { types: './index.d.ts', node: './node.js', default: './index.js' },
  './classic': './opensig-classic.js',
};
pj.engines = { node: '>=20' };
pj.files = Array.from(new Set([...(pj.files || []), 'index.js', 'node.js', 'index.d.ts', 'opensig-classic.js']));
pj.sideEffects = ['./opensig.js', './index.js', './node.js', './opensig-classic.js'];
fs.writeFileSync(path.join(pkgDir, 'package.json'), JSON.stringify(pj, null, 2) + '\n');

// 3. sizes (gzip -9), next to the original's
const gz = (buf) => zlib.gzipSync(buf, { level: 9 }).length;
const bundlerWasm = fs.readFileSync(path.join(pkgDir, 'opensig_bg.wasm'));
const bundlerJs = ['opensig.js', 'opensig_bg.js', 'index.js'].map((f) => fs.readFileSync(path.join(pkgDir, f)));
const report = {
  'wasm (bytes / gzip)': `${bundlerWasm.length} / ${gz(bundlerWasm)}`,
  'ESM glue js (gzip)': bundlerJs.reduce((a, b) => a + gz(b), 0),
  'ESM wasm + js (gzip)': gz(bundlerWasm) + bundlerJs.reduce((a, b) => a + gz(b), 0),
  'opensig-classic.js (bytes / gzip)': `${Buffer.byteLength(classic)} / ${gz(Buffer.from(classic, 'utf8'))}`,
  'original AgoraSigSDK.min.js (gzip)': ORIGINAL_GZIP,
};
fs.writeFileSync(path.join(pkgDir, 'size.json'), JSON.stringify(report, null, 2) + '\n');
for (const [k, v] of Object.entries(report)) console.log(`[build-sdk] ${k}: ${v}`);

// 4. size budgets (gzip -9 bytes): the build fails past them, so the SDK cannot grow unnoticed.
// They sit just above today's sizes; the goals are the original's size for the npm package and
// 1.15x it for the classic script (README "Size" says where the bytes are). Raising a budget is
// a decision: change it here, with the reason in the commit.
// 2026-11-30: +1,465 / +1,870 B for channel-history recovery, `channel.history()` and
// `onMessageChannelLost` (from 57,159 / 61,255).
const BUDGET = { npm: 60950, classic: 65570 }; // BENCHMARKS.md says what each raise bought
const GOAL = { npm: ORIGINAL_GZIP, classic: Math.round(ORIGINAL_GZIP * 1.15) };
const sizes = {
  npm: gz(bundlerWasm) + bundlerJs.reduce((a, b) => a + gz(b), 0),
  classic: gz(Buffer.from(classic, 'utf8')),
};
let over = false;
for (const k of Object.keys(BUDGET)) {
  const ok = sizes[k] <= BUDGET[k];
  over ||= !ok;
  console.log(`[build-sdk] ${k}: ${sizes[k]} B gzip, budget ${BUDGET[k]}${ok ? '' : ' EXCEEDED'}, goal ${GOAL[k]} (${(sizes[k] / ORIGINAL_GZIP).toFixed(2)}x the original)`);
}
if (over) {
  console.error('[build-sdk] the SDK is over its size budget (js/build.mjs BUDGET)');
  process.exit(1);
}
