// Post-processing of the two wasm-pack outputs into the published package:
// pkg/index.js + index.d.ts + package.json fields, pkg/opensig-classic.js, and a size report.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [pkgDir, classicDir] = process.argv.slice(2);
const ORIGINAL_GZIP = 42608; // AgoraSigSDK.min.js 1.4.0, gzip -9

// 1. classic script: no-modules glue + the wasm inline + synchronous init + UMD footer
const glue = fs.readFileSync(path.join(classicDir, 'opensig.js'), 'utf8');
const wasm = fs.readFileSync(path.join(classicDir, 'opensig_bg.wasm'));
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
const footer = fs.readFileSync(path.join(here, 'classic-footer.js'), 'utf8');
const classic =
  `/*! opensig ${version} - AgoraSig 1.4 web API in Rust/WebAssembly - drop-in for AgoraSigSDK.min.js */\n` +
  `(function (root) {\n"use strict";\n${glue}\nvar WASM_BASE64 = "${wasm.toString('base64')}";\n${footer}\n})(typeof self !== 'undefined' ? self : this);\n`;
fs.writeFileSync(path.join(pkgDir, 'opensig-classic.js'), classic);

// 2. ESM entry, hand-written types, package.json
fs.copyFileSync(path.join(here, 'index.js'), path.join(pkgDir, 'index.js'));
fs.copyFileSync(path.join(here, 'opensig.d.ts'), path.join(pkgDir, 'index.d.ts'));
const pj = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
pj.name = 'opensig';
pj.description = 'Drop-in replacement for the Agora Signaling Web SDK 1.4 (Rust/WebAssembly), for opensig-server';
pj.type = 'module';
pj.main = 'index.js';
pj.module = 'index.js';
pj.types = 'index.d.ts';
pj.exports = { '.': { types: './index.d.ts', default: './index.js' }, './classic': './opensig-classic.js' };
pj.files = Array.from(new Set([...(pj.files || []), 'index.js', 'index.d.ts', 'opensig-classic.js']));
pj.sideEffects = ['./opensig.js', './index.js', './opensig-classic.js'];
fs.writeFileSync(path.join(pkgDir, 'package.json'), JSON.stringify(pj, null, 2) + '\n');

// 3. sizes (gzip -9), next to the original's
const gz = (buf) => zlib.gzipSync(buf, { level: 9 }).length;
const bundlerWasm = fs.readFileSync(path.join(pkgDir, 'opensig_bg.wasm'));
const bundlerJs = ['opensig.js', 'opensig_bg.js', 'index.js'].map((f) => fs.readFileSync(path.join(pkgDir, f)));
const report = {
  'wasm (bytes / gzip)': `${bundlerWasm.length} / ${gz(bundlerWasm)}`,
  'ESM glue js (gzip)': bundlerJs.reduce((a, b) => a + gz(b), 0),
  'ESM wasm + js (gzip)': gz(bundlerWasm) + bundlerJs.reduce((a, b) => a + gz(b), 0),
  'opensig-classic.js (bytes / gzip)': `${classic.length} / ${gz(Buffer.from(classic))}`,
  'original AgoraSigSDK.min.js (gzip)': ORIGINAL_GZIP,
};
fs.writeFileSync(path.join(pkgDir, 'size.json'), JSON.stringify(report, null, 2) + '\n');
for (const [k, v] of Object.entries(report)) console.log(`[build-sdk] ${k}: ${v}`);
