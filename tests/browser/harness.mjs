// What the browser tests share: their environment, the line protocol with
// the Rust test, failures, the accessibility check and the browser itself.
//
// Environment: DEPWATCH_URL (the status page), OUT (screenshot folder),
// EXPECT (JSON, the test's own), CHROMIUM (the binary).

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";

export const url = process.env.DEPWATCH_URL;
export const out = process.env.OUT;
export const expect = JSON.parse(process.env.EXPECT);
export const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Waits for the Rust test to say `want` on stdin. */
export async function waitLine(want) {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error(`stdin closed while waiting for "${want}"`);
    if (value.trim() === want) return;
  }
}

export class Failed extends Error {}
export function fail(why) {
  throw new Failed(why);
}
export function check(cond, why) {
  if (!cond) fail(why);
}

/** axe-core's WCAG 2.1 AA and best-practice rules in `scheme`, then light again. */
export async function axe(page, scheme) {
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

/** Notes a page's script errors and its navigations of the main frame. */
export function watch(page) {
  const seen = { errors: [], navigations: 0 };
  page.on("pageerror", (e) => seen.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") seen.errors.push(m.text()); });
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) seen.navigations++; });
  return seen;
}

/** Runs `test(browser)` in headless Chromium; a failure prints "FAIL <why>"
 * and the process exits 1. */
export async function drive(test) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  let code = 0;
  try {
    await test(browser);
  } catch (e) {
    console.log(`FAIL ${e instanceof Failed ? e.message : String(e.message).split("\n")[0]}`);
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
}
