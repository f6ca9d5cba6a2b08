// The status page past 50 components (tests/it/page.rs): those not healthy in
// full, the others named only, live.
//
// Environment: DEPWATCH_URL (the status page), OUT (screenshot folder),
// EXPECT (JSON: { redis, total }: the component killed, components configured),
// CHROMIUM (the binary).
// Talks with the Rust test over lines: it prints "ready-to-kill", waits for
// "killed" on stdin, prints "unhealthy <ms>" once the killed component's chip
// became a row in full on the open page (no reload), "shots-taken", waits for "restarted",
// prints "healthy <ms>" once it is a chip again, then "done". Any failure
// prints "FAIL <why>" and exits 1.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { createRequire } from "node:module";

const url = process.env.DEPWATCH_URL;
const out = process.env.OUT;
const expect = JSON.parse(process.env.EXPECT);
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function waitLine(want) {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error(`stdin closed while waiting for "${want}"`);
    if (value.trim() === want) return;
  }
}
class Failed extends Error {}
function fail(why) {
  throw new Failed(why);
}
function check(cond, why) {
  if (!cond) fail(why);
}

async function axe(page, scheme) {
  await page.emulateMedia({ colorScheme: scheme });
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
    });
    return r.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")})`);
  });
  check(found.length === 0, `axe (${scheme}): ${found.join(" | ")}`);
  await page.emulateMedia({ colorScheme: "light" });
}

// How the page shows a component: "row" (in full), "chip" (named) or null.
async function shownAs(page, name) {
  return page.evaluate((n) => {
    const e = [...document.querySelectorAll("[data-component]")].find((x) => x.getAttribute("data-component") === n);
    return e ? (e.hasAttribute("data-chip") ? "chip" : "row") : null;
  }, name);
}

async function waitShown(page, name, want, ms) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if ((await shownAs(page, name)) === want) return Date.now() - t0;
    await page.waitForTimeout(50);
  }
  fail(`${name} did not become a ${want} within ${ms} ms on the open page (${await shownAs(page, name)})`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let code = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  const resp = await page.goto(url, { waitUntil: "load" });
  check(resp.status() === 200, `GET / answered ${resp.status()}`);
  await page.waitForFunction(() => document.getElementById("live").textContent === "live", null, { timeout: 15000 });
  check((await page.getAttribute("#components", "data-view")) === "compact", "not the compact view");
  const chips = await page.locator("li.chip").count();
  const rows = await page.locator("article.row").count();
  check(chips === expect.total && rows === 0, `all healthy: ${chips} chips, ${rows} rows (want ${expect.total}, 0)`);
  check(new RegExp(`${expect.total} healthy`).test(await page.textContent("#h-chips")), "chips heading");
  await page.addScriptTag({ path: axePath });
  await axe(page, "light");
  await axe(page, "dark");
  await page.screenshot({ path: join(out, "compact-healthy.png"), fullPage: true });

  // A chip's own routine checks fetch nothing: count the page's fetches.
  let fetches = 0;
  page.on("request", (r) => { if (r.url() === url) fetches++; });
  await page.waitForTimeout(2500);
  check(fetches === 0, `${fetches} page fetches while every component stayed healthy`);

  const before = navigations;
  await page.evaluate(() => { window.__stayed = true; });
  console.log("ready-to-kill");
  await waitLine("killed");
  const took = await waitShown(page, expect.redis, "row", 8000);
  console.log(`unhealthy ${took}`);
  const row = page.locator(`article[data-component="${expect.redis}"]`);
  check(/Unhealthy/.test(await row.locator(".state .badge").textContent()), "the row's state");
  check((await page.locator("li.chip").count()) === expect.total - 1, "the chip stayed beside its row");
  await page.waitForFunction(() => /\b1 unhealthy\b/.test(document.querySelector("header.top .sub").textContent), null, { timeout: 20000 });
  check(await page.evaluate(() => window.__stayed === true) && navigations === before, "the page was reloaded");
  await page.addScriptTag({ path: axePath });
  await axe(page, "light");
  await axe(page, "dark");
  await page.screenshot({ path: join(out, "compact-failing.png"), fullPage: true });

  // The page of that one component.
  const one = await context.newPage();
  await one.goto(`${url}?component=${encodeURIComponent(expect.redis)}`);
  check((await one.locator("article.row").count()) === 1 && (await one.locator("li.chip").count()) === 0, "?component= shows one row");
  await one.close();
  console.log("shots-taken");

  await waitLine("restarted");
  const back = await waitShown(page, expect.redis, "chip", 15000);
  console.log(`healthy ${back}`);
  check((await page.locator("article.row").count()) === 0, "a row left after recovery");
  check(errors.length === 0, `page errors: ${errors.join(" | ")}`);
  console.log("done");
} catch (e) {
  console.log(`FAIL ${e instanceof Failed ? e.message : String(e.message).split("\n")[0]}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
