// The in-page benchmark of `opensig-bench browser` in each engine: Chromium (Playwright, its
// requests routed: loopback only), Firefox (geckodriver) and WebKit (WebKitWebDriver under
// xvfb-run); in the WebDriver engines the page itself refuses non-loopback requests (the
// compat page's guard). For each SDK (the original 1.4.0, the opensig classic script, and a
// bare WebSocket with JSON.parse): log in, join a channel, then hand identical channel frames to
// the page's socket handlers in a loop and time the page's main thread until the last callback
// (dispatch.mjs's `inject`). Rounds interleave the SDKs (each round loads its page again);
// the median of the measured rounds is printed.
//
//   node engines.mjs <ws-url> <app> <messages> <rounds> <engine,engine…>
//   → ENGINE <engine> <user agent>
//   → ROUND <engine> <sdk> <round> <µs per message> <received> <kind>
//   → BLOCKED <engine> <non-loopback requests refused>
import { launch, context, startPages } from '../../../tests/compat/lib.mjs';
import { openBrowser } from '../../../tests/support/webdriver.mjs';
import { join, inject } from './page-fns.mjs';

const [url, app, countArg, roundsArg, engineList] = process.argv.slice(2);
const count = Number(countArg);
const rounds = Number(roundsArg);
// OPENSIG_BENCH_SDKS / OPENSIG_BENCH_KINDS narrow a run (e.g. one SDK under a profiler)
const pick = (env, all) => (process.env[env] ? process.env[env].split(',') : all);
const sdks = pick('OPENSIG_BENCH_SDKS', ['original', 'opensig', 'raw']);
// channel messages, members joining and leaving, instant messages (page-fns.mjs `inject`)
const kinds = pick('OPENSIG_BENCH_KINDS', ['channel', 'members', 'peer']);

/** One engine as a page: goto, evaluate, blocked requests, close. */
async function engine(name) {
  if (name === 'chromium') {
    const browser = await launch();
    const ctx = await context(browser);
    const page = await ctx.newPage();
    page.on('pageerror', (e) => console.error(`[chromium] page error: ${e.message}`));
    return {
      goto: (u) => page.goto(u),
      evaluate: (fn, arg) => page.evaluate(fn, arg),
      userAgent: () => page.evaluate(() => navigator.userAgent),
      blocked: async () => ctx.blocked.length,
      close: () => browser.close(),
    };
  }
  const b = await openBrowser(name);
  let blocked = 0;
  return {
    goto: async (u) => {
      // count what the page before refused
      blocked += await b.evaluate(() => (window.__blocked || []).length).catch(() => 0);
      await b.goto(u + '&guard=1');
    },
    evaluate: (fn, arg) => b.evaluate(fn, arg),
    userAgent: () => b.userAgent(),
    blocked: async () => blocked + (await b.evaluate(() => (window.__blocked || []).length)),
    close: () => b.close(),
  };
}

const pages = await startPages();
let base = 1_000_000_000;
try {
  for (const name of engineList.split(',')) {
    const e = await engine(name);
    try {
      console.log(`ENGINE ${name} ${await e.userAgent()}`);
      for (let round = 0; round <= rounds; round++) {
        for (const kind of kinds) {
          for (const sdk of sdks) {
            const channel = `engines-${name}-${sdk}`;
            const q = new URLSearchParams({ sdk, app, ap: url });
            await e.goto(`${pages.base}/page.html?${q}`);
            // a fresh account each time: its mailbox versions start at 1
            await e.evaluate(join, [app, url, channel, sdk, `r-${sdk}-${kind}-${base}`]);
            // round 0 warms the engine up (its JIT), and is not reported
            const n = round === 0 ? Math.max(1, Math.floor(count / 10)) : count;
            const r = await e.evaluate(inject, [channel, n, base, kind]);
            base += n + 1;
            if (round > 0) console.log(`ROUND ${name} ${sdk} ${round} ${r.us.toFixed(3)} ${r.received} ${kind}`);
          }
        }
      }
      console.log(`BLOCKED ${name} ${await e.blocked()}`);
    } finally {
      await e.close();
    }
  }
} finally {
  await pages.close();
}
