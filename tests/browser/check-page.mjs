// Opens a running vigil job's live page in headless Chromium, waits until it shows what the job
// should show, fails on any console or page error, and takes a full-page screenshot.
//
//   node tests/browser/check-page.mjs --url http://127.0.0.1:PORT/ --screenshot PATH \
//     [--expect alerts|archaeology] [--timeout-ms 60000]
//
// Exit codes: 0 the page showed everything; 1 something never appeared, the page logged an
// error, or the arguments are wrong; 2 the browser or its driver is not installed.
import fs from "node:fs";

const USAGE =
  "usage: node check-page.mjs --url URL --screenshot PATH [--expect alerts|archaeology] [--timeout-ms MS]";

function parseArgs(argv) {
  const opts = { expect: "alerts", timeoutMs: 60000 };
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      if (i + 1 >= argv.length) fail(1, `${argv[i]} needs a value\n${USAGE}`);
      return argv[++i];
    };
    switch (argv[i]) {
      case "--url": opts.url = value(); break;
      case "--screenshot": opts.screenshot = value(); break;
      case "--expect": opts.expect = value(); break;
      case "--timeout-ms": opts.timeoutMs = Number(value()); break;
      case "-h": case "--help": console.log(USAGE); process.exit(0);
      default: fail(1, `unknown argument ${argv[i]}\n${USAGE}`);
    }
  }
  if (!opts.url || !opts.screenshot) fail(1, USAGE);
  if (!["alerts", "archaeology"].includes(opts.expect)) fail(1, `--expect must be alerts or archaeology\n${USAGE}`);
  if (!(opts.timeoutMs > 0)) fail(1, `--timeout-ms must be a positive number\n${USAGE}`);
  return opts;
}

function fail(code, message) {
  console.error(`check-page: ${message}`);
  process.exit(code);
}

// What each kind of page must show, as named checks run inside the page. Each returns a count;
// the page is ready when every count reaches its minimum.
const CHECKS = {
  alerts: {
    "#open-alerts tbody tr or #feed li": () =>
      document.querySelectorAll("#open-alerts tbody tr").length + document.querySelectorAll("#feed li").length,
    ".chart svg path.line with at least two points": () =>
      [...document.querySelectorAll(".chart svg path.line")].filter(
        (p) => ((p.getAttribute("d") || "").match(/-?\d+(\.\d+)?/g) || []).length >= 4).length,
    "#guards tbody tr": () => document.querySelectorAll("#guards tbody tr").length,
  },
  archaeology: {
    "#patterns tbody tr": () => document.querySelectorAll("#patterns tbody tr").length,
    "#entanglements svg line.edge or circle.node": () =>
      document.querySelectorAll("#entanglements svg line.edge, #entanglements svg circle.node").length,
    "#sessions svg rect.bar": () => document.querySelectorAll("#sessions svg rect.bar").length,
  },
};

// What is reported on stdout once the page is ready.
const SUMMARY = {
  alerts: () => ({
    alerts_rows: document.querySelectorAll("#open-alerts tbody tr").length,
    feed: document.querySelectorAll("#feed li").length,
    charts: document.querySelectorAll(".chart").length,
    bands: document.querySelectorAll(".chart rect.alert-band").length,
    guards: document.querySelectorAll("#guards tbody tr").length,
  }),
  archaeology: () => ({
    patterns: document.querySelectorAll("#patterns tbody tr").length,
    nodes: document.querySelectorAll("#entanglements svg circle.node").length,
    edges: document.querySelectorAll("#entanglements svg line.edge").length,
    bars: document.querySelectorAll("#sessions svg rect.bar").length,
  }),
};

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) fail(2, `chromium not found at ${executablePath}: run scripts/setup.sh --tests`);
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch {
    fail(2, "playwright-core is not installed in tests/browser: run scripts/setup.sh --tests");
  }

  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  let outcome;
  try {
    outcome = await inspect(browser, opts);
  } finally {
    await browser.close();
  }
  if (outcome.failure) fail(1, outcome.failure);
  console.log(JSON.stringify(outcome.summary));
}

/** Waits for the page to show what opts.expect asks for; returns its summary or a failure. */
async function inspect(browser, opts) {
  const errors = [];
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`console: ${msg.text()}`);
  });
  page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
  // A dialog means text from the server ran as script.
  page.on("dialog", (dialog) => {
    errors.push(`the page opened a dialog (${dialog.type()}): ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });

  const deadline = Date.now() + opts.timeoutMs;
  await page.goto(opts.url, { waitUntil: "domcontentloaded", timeout: opts.timeoutMs });
  const checks = CHECKS[opts.expect];
  let missing = Object.keys(checks);
  while (missing.length > 0 && Date.now() < deadline) {
    const counts = {};
    for (const [name, fn] of Object.entries(checks)) counts[name] = await page.evaluate(fn);
    missing = Object.keys(checks).filter((name) => counts[name] < 1);
    if (missing.length > 0) await page.waitForTimeout(250);
  }
  // One more redraw, so the screenshot shows a settled page.
  await page.waitForTimeout(400);
  await page.screenshot({ path: opts.screenshot, fullPage: true });

  const errorText = `\npage errors:${errors.length ? `\n  ${errors.join("\n  ")}` : " none"}\n(screenshot: ${opts.screenshot})`;
  if (missing.length > 0)
    return { failure: `after ${opts.timeoutMs} ms at ${opts.url}, never appeared: ${missing.join("; ")}${errorText}` };
  if (errors.length > 0) return { failure: `the page at ${opts.url} logged errors${errorText}` };
  return { summary: await page.evaluate(SUMMARY[opts.expect]) };
}

main().catch((err) => fail(1, err.stack || String(err)));
