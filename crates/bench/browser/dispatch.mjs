// Browser side of opensig-bench: a page in headless Chromium (loopback only) logs in with one
// SDK, joins a channel and counts onMessageChannelReceive callbacks while opensig-bench floods
// that channel from a native client. The page is held busy while the flood arrives, then
// dispatches the whole backlog: callbacks per second between the first and the last. Three
// rounds per SDK, alternating; the median is reported. Driven over stdout by `opensig-bench browser`:
//
//   node dispatch.mjs <ws-url> <app> <channel> <count> <sdk,sdk…>
//   → READY <sdk> <channel> <round> <count>   (flood <count> messages to <channel> now)
//   → RESULT <sdk> <round> <callbacks/s> <received>
//   → INJECT <sdk> <round> <callbacks/s> <µs per message> <received>
//
// Then the in-page rounds (the primary figure): the same channel frames, built once, handed
// to each page's socket message handler in a loop (the socket is the real one, wrapped before
// the SDK opened it): no network, no browser scheduling in between, only the SDK's own work
// from frame text to callback. Five rounds per SDK, interleaved.
//   → SIZE <name> <gzip bytes>
//   → DONE <blocked non-loopback requests>
//
// It reuses the compat suite's machinery (the original SDK via npm pack, the page server, the
// Chromium launch with every non-loopback host blocked).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { launch, context, startPages, originalSdk, opensigSdk, ROOT } from '../../../tests/compat/lib.mjs';
import { join, inject } from './page-fns.mjs';

const [url, app, channel, countArg, sdkList] = process.argv.slice(2);
const count = Number(countArg);
const sdks = sdkList.split(',');

const gz = (files) => files.reduce((n, f) => n + zlib.gzipSync(fs.readFileSync(f), { level: 9 }).length, 0);
const pkg = (f) => path.join(ROOT, 'pkg', f);
console.log(`SIZE original ${gz([originalSdk()])}`);
// the npm package as scripts/build-sdk counts it (the wasm, the glue, the entry and the reader)
const built = JSON.parse(fs.readFileSync(pkg('size.json'), 'utf8'));
console.log(`SIZE opensig-npm ${built['ESM wasm + js (gzip)']}`);
console.log(`SIZE opensig-classic ${gz([opensigSdk()])}`);

const pages = await startPages();
const browser = await launch();
const contexts = [];
try {
  // one page per SDK, each on its own channel (flood-<sdk>)
  const pagesBySdk = {};
  for (const sdk of sdks) {
    const ctx = await context(browser);
    contexts.push(ctx);
    const page = await ctx.newPage();
    page.on('pageerror', (e) => console.error(`[${sdk}] page error: ${e.message}`));
    const q = new URLSearchParams({ sdk, app, ap: url });
    await page.goto(`${pages.base}/page.html?${q}`);
    await page.evaluate(join, [app, url, `${channel}-${sdk}`, sdk]);
    pagesBySdk[sdk] = page;
  }
  // rounds alternate between the SDKs, so that drift on this machine hits all alike
  const rounds = [['warmup', Math.max(1, Math.floor(count / 10))]];
  for (let i = 1; i <= 5; i++) rounds.push([`run${i}`, count]);
  for (const [round, n] of rounds) {
    for (const sdk of sdks) {
      const page = pagesBySdk[sdk];
      await page.evaluate(() => Object.assign(window.B, { n: 0, first: 0, last: 0, live: true }));
      console.log(`READY ${sdk} ${channel}-${sdk} ${round} ${n}`);
      // the page's main thread is kept busy while the flood is sent, so that it then
      // dispatches from a full backlog: the SDK's capacity, not the flood's pace
      await page.evaluate(() => {
        const end = performance.now() + 2000;
        while (performance.now() < end);
      });
      // OPENSIG_BENCH_PROFILE=1: the page's CPU profile of a measured round, top functions
      const cdp = process.env.OPENSIG_BENCH_PROFILE && round === 'run1' ? await page.context().newCDPSession(page) : null;
      if (cdp) {
        await cdp.send('Profiler.enable');
        await cdp.send('Profiler.setSamplingInterval', { interval: 100 });
        await cdp.send('Profiler.start');
      }
      try {
        await page.waitForFunction((n) => window.B.n >= n, n, { timeout: 120000, polling: 100 });
      } catch (e) {
        // report what arrived
      }
      if (cdp) await printProfile(cdp, sdk);
      const b = await page.evaluate(() => ({ ...window.B }));
      const rate = b.n > 1 && b.last > b.first ? ((b.n - 1) * 1000) / (b.last - b.first) : 0;
      console.log(`RESULT ${sdk} ${round} ${rate.toFixed(0)} ${b.n}`);
    }
  }
  // in-page injection: identical frames to every SDK, interleaved rounds
  let base = 1_000_000_000;
  for (const round of ['warmup', 'run1', 'run2', 'run3', 'run4', 'run5']) {
    for (const sdk of sdks) {
      const n = round === 'warmup' ? Math.max(1, Math.floor(count / 10)) : count;
      const page = pagesBySdk[sdk];
      // OPENSIG_BENCH_PROFILE=1: the page's CPU profile of the first measured round
      const cdp = process.env.OPENSIG_BENCH_PROFILE && round === 'run1' ? await page.context().newCDPSession(page) : null;
      if (cdp) {
        await cdp.send('Profiler.enable');
        await cdp.send('Profiler.setSamplingInterval', { interval: 50 });
        await cdp.send('Profiler.start');
      }
      const r = await page.evaluate(inject, [`${channel}-${sdk}`, n, base]);
      if (cdp) await printProfile(cdp, `in-page ${sdk}`);
      base += n + 1;
      console.log(`INJECT ${sdk} ${round} ${r.rate.toFixed(0)} ${r.us.toFixed(2)} ${r.received}`);
    }
  }
} finally {
  await browser.close();
  await pages.close();
}

console.log(`DONE ${contexts.reduce((n, c) => n + c.blocked.length, 0)}`);

async function printProfile(cdp, sdk) {
  const { profile } = await cdp.send('Profiler.stop');
  const self = new Map();
  const dt = profile.timeDeltas;
  const byId = new Map(profile.nodes.map((x) => [x.id, x]));
  profile.samples.forEach((id, i) => {
    const f = byId.get(id).callFrame;
    const key = `${f.functionName || '(anon)'} ${f.url.split('/').pop()}:${f.lineNumber}`;
    self.set(key, (self.get(key) || 0) + (dt[i] || 0));
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 25)
    .forEach(([k, v]) => console.error(`[profile ${sdk}] ${((100 * v) / total).toFixed(1)}% ${k}`));
}
