// Drives headless Chromium against a running depwatch for tests/it/page.rs.
//
// Environment: DEPWATCH_URL (the status page), OUT (screenshot folder),
// EXPECT (JSON: { queue, waiting, storage, redis }), CHROMIUM (the binary).
// Talks with the Rust test over lines: it prints "ready-to-kill", waits for
// "killed" on stdin, prints "unhealthy <ms>" once the row turned unhealthy on
// the open page (no reload), takes the failing screenshots and prints "shots-taken", waits for
// "restarted", prints "healthy <ms>", then "done". Any failure prints "FAIL <why>" and exits 1.

import { join } from "node:path";
import { url, out, expect, axePath, waitLine, check, fail, axe, watch, drive } from "./harness.mjs";

const sizes = { desktop: { width: 1280, height: 900 }, phone: { width: 390, height: 844 } };

async function shots(page, state) {
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    for (const [name, size] of Object.entries(sizes)) {
      await page.setViewportSize(size);
      await page.screenshot({ path: join(out, `${state}-${scheme}-${name}.png`), fullPage: true });
    }
  }
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize(sizes.desktop);
}

async function rowState(page, name) {
  return page.evaluate((n) => {
    const r = [...document.querySelectorAll("[data-component]")].find((e) => e.getAttribute("data-component") === n);
    return r ? r.querySelector(".state .badge").textContent : null;
  }, name);
}

async function waitState(page, name, want, ms) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if ((await rowState(page, name)) === want) return Date.now() - t0;
    await page.waitForTimeout(50);
  }
  fail(`${name} did not turn ${want} within ${ms} ms on the open page (still ${await rowState(page, name)})`);
}

// A fresh profile (Playwright's own temporary user-data-dir) each run.
await drive(async (browser) => {
  const context = await browser.newContext({ viewport: sizes.desktop });
  const page = await context.newPage();
  const seen = watch(page);
  const resp = await page.goto(url, { waitUntil: "load" });
  check(resp.status() === 200, `GET / answered ${resp.status()}`);
  // Nothing but the page itself and its event stream is requested.
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));

  // The rows and their numbers.
  await page.waitForFunction(() => document.getElementById("live").textContent === "live", null, { timeout: 15000 });
  check((await page.textContent("#verdict")) === "Healthy", `verdict ${await page.textContent("#verdict")}`);
  check((await rowState(page, expect.redis)) === "Healthy", `redis row ${await rowState(page, expect.redis)}`);
  const redisRow = page.locator(`[data-component="${expect.redis}"]`);
  const queueRow = redisRow.locator("table.q tbody tr", { hasText: expect.queue });
  check((await queueRow.count()) === 1, "queue row missing");
  const headers = await redisRow.locator("table.q thead th").allTextContents();
  const cells = await queueRow.locator("th, td").allTextContents();
  const waiting = cells[headers.indexOf("waiting")];
  check(waiting === String(expect.waiting), `waiting shows ${waiting}, want ${expect.waiting}`);
  check(/min|s$/.test(cells[headers.indexOf("oldest waiting")]), `oldest waiting ${cells}`);
  check((await redisRow.locator("svg.spark path").count()) === 1, "no sparkline");
  check(/hit rate/.test(await redisRow.textContent()), "no hit rate");
  const disk = page.locator(`[data-component="${expect.storage}"]`);
  check(/% used/.test(await disk.locator(".use").textContent()), "no used bar");
  check(/growth/.test(await disk.textContent()), "no growth");
  await page.waitForFunction((n) => {
    const r = [...document.querySelectorAll("[data-component]")].find((e) => e.getAttribute("data-component") === n);
    return r && r.querySelector("svg.hist path");
  }, expect.storage, { timeout: 20000 });
  // The JSON of a row opens and is the component's.
  await redisRow.locator("details summary").click();
  const json = JSON.parse(await redisRow.locator("details pre").textContent());
  check(json.kind === "redis" && json.details.queues[expect.queue], "details JSON");

  await page.addScriptTag({ path: axePath });
  await axe(page, "light");
  await axe(page, "dark");
  await page.emulateMedia({ colorScheme: "light" });
  // One column under 600 px: the row's parts stack.
  await page.setViewportSize(sizes.phone);
  const cols = await page.evaluate(() => getComputedStyle(document.querySelector(".head")).gridTemplateColumns.split(" ").length);
  check(cols === 1, `phone layout has ${cols} columns`);
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 390, `phone page is ${wide}px wide`);
  await page.setViewportSize(sizes.desktop);
  await shots(page, "healthy");

  // Kill redis-server: the row turns unhealthy live, without a reload.
  const before = seen.navigations;
  await page.evaluate(() => { window.__stayed = true; });
  console.log("ready-to-kill");
  await waitLine("killed");
  const took = await waitState(page, expect.redis, "Unhealthy", 3000);
  check(await page.evaluate(() => window.__stayed === true), "the page was reloaded");
  check(seen.navigations === before, "the page navigated");
  console.log(`unhealthy ${took}`);
  // The verdict follows, and the server-rendered numbers catch up.
  await page.waitForFunction(() => document.getElementById("verdict").textContent === "Unhealthy", null, { timeout: 15000 });
  await page.waitForFunction((n) => {
    const r = [...document.querySelectorAll("[data-component]")].find((e) => e.getAttribute("data-component") === n);
    return r && !r.querySelector(".why").hidden && /connect/i.test(r.querySelector(".why").textContent);
  }, expect.redis, { timeout: 20000 });
  // The server-rendered parts follow (counts, numbers, JSON) without a reload.
  await page.waitForFunction(() => /\b1 unhealthy\b/.test(document.querySelector("header.top .sub").textContent), null, { timeout: 20000 });
  check(await page.evaluate(() => window.__stayed === true), "the page was reloaded");
  await shots(page, "failing");
  await axe(page, "light");
  await axe(page, "dark");
  console.log("shots-taken");

  await waitLine("restarted");
  const back = await waitState(page, expect.redis, "Healthy", 15000);
  console.log(`healthy ${back}`);
  const foreign = requests.filter((u) => !u.startsWith(new URL(url).origin));
  check(foreign.length === 0, `requests elsewhere: ${foreign.join(", ")}`);
  check(seen.errors.length === 0, `page errors: ${seen.errors.join(" | ")}`);

  // Without JavaScript the page still shows everything and reloads itself.
  const nojs = await browser.newContext({ javaScriptEnabled: false, viewport: sizes.desktop });
  const p2 = await nojs.newPage();
  await p2.goto(url);
  check((await p2.locator('meta[http-equiv="refresh"]').count()) === 1, "no meta refresh without JavaScript");
  check((await p2.locator("[data-component]").count()) >= 2, "no rows without JavaScript");
  check((await p2.textContent("#live")).startsWith("refreshes every"), "the no-JavaScript note");
  await nojs.close();
  console.log("done");
});
