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

import { join } from "node:path";
import { url, out, expect, axePath, waitLine, check, fail, axe, watch, drive } from "./harness.mjs";

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

await drive(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const seen = watch(page);
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

  const before = seen.navigations;
  await page.evaluate(() => { window.__stayed = true; });
  console.log("ready-to-kill");
  await waitLine("killed");
  const took = await waitShown(page, expect.redis, "row", 8000);
  console.log(`unhealthy ${took}`);
  const row = page.locator(`article[data-component="${expect.redis}"]`);
  check(/Unhealthy/.test(await row.locator(".state .badge").textContent()), "the row's state");
  check((await page.locator("li.chip").count()) === expect.total - 1, "the chip stayed beside its row");
  await page.waitForFunction(() => /\b1 unhealthy\b/.test(document.querySelector("header.top .sub").textContent), null, { timeout: 20000 });
  check(await page.evaluate(() => window.__stayed === true) && seen.navigations === before, "the page was reloaded");
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
  check(seen.errors.length === 0, `page errors: ${seen.errors.join(" | ")}`);
  console.log("done");
});
