// Load a report in headless Chromium, run axe-core's WCAG 2.1 A/AA rules, check keyboard
// use of the findings table, block and count every network request, take a screenshot,
// and print one JSON object on stdout. Driven by tests/browser/test_report_browser.py.
//
// usage: node check_report.mjs REPORT.html SCREENSHOT.png [CHROMIUM]
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const axePath = require.resolve("axe-core/axe.min.js");

const [reportArg, shotArg, chromiumArg] = process.argv.slice(2);
if (!reportArg || !shotArg) {
  console.error("usage: node check_report.mjs REPORT.html SCREENSHOT.png [CHROMIUM]");
  process.exit(2);
}
const executablePath = chromiumArg || process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = mkdtempSync(join(tmpdir(), "research-chromium-"));
const result = { violations: [], external_requests: [], console_errors: [], keyboard: {} };

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = context.pages()[0] || (await context.newPage());
  // the report must load nothing from anywhere: count and block every non-file request
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file:") || url.startsWith("data:")) { return route.continue(); }
    result.external_requests.push(url);
    return route.abort();
  });
  page.on("console", (msg) => { if (msg.type() === "error") { result.console_errors.push(msg.text()); } });
  page.on("pageerror", (err) => result.console_errors.push(String(err)));

  await page.goto(pathToFileURL(resolve(reportArg)).href, { waitUntil: "load" });
  result.title = await page.title();
  result.lang = await page.evaluate(() => document.documentElement.lang);

  // keyboard: Tab from the top until a sort button of the findings table has focus, then Enter
  const rowsBefore = await page.evaluate(() =>
    Array.from(document.querySelectorAll("#findings tbody tr")).map((r) => r.id));
  let reached = null;
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => {
      const el = document.activeElement;
      return el && el.matches("#findings button.sort") ? el.getAttribute("data-col") : null;
    });
    if (reached !== null) { result.keyboard.tabs_to_sort_button = i + 1; break; }
  }
  result.keyboard.reached_sort_button = reached !== null;
  if (reached !== null) {
    const sortBefore = await page.evaluate(() => document.activeElement.parentNode.getAttribute("aria-sort"));
    await page.keyboard.press("Enter");
    const after = await page.evaluate(() => ({
      sort: document.activeElement.parentNode.getAttribute("aria-sort"),
      rows: Array.from(document.querySelectorAll("#findings tbody tr")).map((r) => r.id),
    }));
    result.keyboard.aria_sort_before = sortBefore;
    result.keyboard.aria_sort_after = after.sort;
    result.keyboard.order_changed = JSON.stringify(after.rows) !== JSON.stringify(rowsBefore);
    // Enter again reverses the order
    await page.keyboard.press("Enter");
    result.keyboard.aria_sort_again = await page.evaluate(() => document.activeElement.parentNode.getAttribute("aria-sort"));
  }
  // filtering works and is announced
  if (await page.$("#filter-severity")) {
    await page.selectOption("#filter-severity", "high");
    result.filter = await page.evaluate(() => ({
      visible: Array.from(document.querySelectorAll("#findings tbody tr")).filter((r) => !r.hidden).length,
      visible_not_high: Array.from(document.querySelectorAll("#findings tbody tr"))
        .filter((r) => !r.hidden && r.getAttribute("data-severity") !== "high").length,
      status: document.getElementById("table-status").textContent,
    }));
    await page.selectOption("#filter-severity", "");
  }

  await page.addScriptTag({ path: axePath });
  const axe = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] },
      resultTypes: ["violations", "incomplete"],
    });
    return {
      violations: r.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target, summary: n.failureSummary })),
      })),
      passes: r.passes.length,
      incomplete: r.incomplete.map((v) => v.id),
      version: axe.version,
    };
  });
  result.violations = axe.violations;
  result.axe_passes = axe.passes;
  result.axe_incomplete = axe.incomplete;
  result.axe_version = axe.version;

  await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
  await page.screenshot({ path: shotArg, fullPage: false });
  result.screenshot = shotArg;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
