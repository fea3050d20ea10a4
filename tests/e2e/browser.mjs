#!/usr/bin/env node
// A real browser on unicred's login page: playwright-core driving the system Chromium.
//
//   node browser.mjs --redirect-uri URI --username U --password P AUTHZ_URL [AUTHZ_URL ...]
//
// The first authorization URL must show the login page: the script fills #username and
// #password, clicks #submit and captures the redirect to the redirect URI, which it serves
// itself with a tiny HTTP server on the redirect URI's host and port (which must be free). Each further URL is opened in the same browser
// context and must come back to the redirect URI WITHOUT showing the login page (SSO).
// No Content-Security-Policy violation may be reported on the way.
//
// Prints {"results":[{"code","state","iss","login_page":bool}, ...]} on stdout; a screenshot of
// the filled login page is saved to a temp file whose path is printed on stderr. Exit 0 on
// success; on failure a message on stderr and a non-zero status.
// Environment: CHROMIUM (default /usr/bin/chromium).

import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

function fail(msg, code = 1) {
  process.stderr.write(`browser.mjs FAILED: ${msg}\n`);
  process.exit(code);
}

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  fail(`playwright-core is not installed (${e.message}); run: (cd tests/e2e && npm ci)`, 3);
}

const { values: opt, positionals: urls } = parseArgs({
  allowPositionals: true,
  options: {
    "redirect-uri": { type: "string" },
    username: { type: "string" },
    password: { type: "string" },
    timeout: { type: "string", default: "15000" },
  },
});
const cb = opt["redirect-uri"];
if (!cb || !opt.username || !opt.password || urls.length === 0) {
  fail("usage: browser.mjs --redirect-uri URI --username U --password P AUTHZ_URL [AUTHZ_URL ...]", 2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!fs.existsSync(executablePath)) fail(`no Chromium at ${executablePath}: apt-get install -y chromium`, 3);
const timeout = Number(opt.timeout);

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "unicred-e2e-chromium-"));
const screenshot = path.join(os.tmpdir(), `unicred-e2e-login-${process.pid}.png`);
let context;
let server;

async function main() {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(timeout);
  context.setDefaultNavigationTimeout(timeout);

  // CSP violations: the console's "Refused to ..." reports and the DOM event (an init script
  // runs outside the page's CSP).
  const violations = [];
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`securitypolicyviolation: ${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });

  // The redirect URI is answered here, by a local HTTP server on its host and port (the
  // relying party's part); each hit resolves the pending waiter.
  let onCallback = null;
  const cbUrl = new URL(cb);
  server = http.createServer((req, res) => {
    const hit = new URL(req.url, cb).href;
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("callback captured\n");
    if (hit.startsWith(cb) && onCallback) onCallback(hit);
  });
  await new Promise((resolve, reject) => {
    server.once("error", (e) => reject(new Error(`cannot serve the redirect URI ${cb}: ${e.message}`)));
    server.listen(Number(cbUrl.port || 80), cbUrl.hostname, resolve);
  });
  const nextCallback = () =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no redirect to ${cb} within ${timeout} ms`)), timeout);
      onCallback = (u) => {
        clearTimeout(t);
        onCallback = null;
        resolve(u);
      };
    });

  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    const t = m.text();
    if (/content.security.policy|securitypolicyviolation/i.test(t)) violations.push(`${page.url()}: ${t}`);
  });
  page.on("pageerror", (e) => violations.push(`page error on ${page.url()}: ${e.message}`));
  if (process.env.E2E_DEBUG) {
    const log = (m) => process.stderr.write(`[browser] ${m}\n`);
    page.on("request", (r) => log(`> ${r.method()} ${r.url()}`));
    page.on("response", (r) => log(`< ${r.status()} ${r.url()}`));
    page.on("requestfailed", (r) => log(`! ${r.url()} ${r.failure()?.errorText}`));
    page.on("console", (m) => log(`console ${m.type()}: ${m.text()}`));
  }
  const seen = [];
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) seen.push(f.url());
  });

  const results = [];
  for (const [i, url] of urls.entries()) {
    seen.length = 0;
    const cbHit = nextCallback();
    cbHit.catch(() => {});
    await page.goto(url);
    let loginPage = false;
    if (i === 0) {
      // The real login page, as served.
      const form = page.locator("form#login");
      await form.waitFor({ state: "visible" });
      loginPage = true;
      const heading = await page.title();
      await page.fill("#username", opt.username);
      await page.fill("#password", opt.password);
      // The stylesheet applied (a CSP-blocked stylesheet would leave the defaults).
      const sheets = await page.evaluate(() => document.styleSheets.length);
      if (sheets < 1) throw new Error("login page has no stylesheet applied");
      await page.screenshot({ path: screenshot, fullPage: true });
      process.stderr.write(`login page screenshot (${heading}): ${screenshot}\n`);
      if (violations.length) throw new Error(`CSP violations on the login page:\n  ${violations.join("\n  ")}`);
      await page.click("#submit");
    }
    let hit;
    try {
      hit = await cbHit;
    } catch (e) {
      const err = await page.locator("#error").textContent({ timeout: 500 }).catch(() => null);
      throw new Error(`${e.message}; page ${page.url()}${err ? `, #error: ${err}` : ""}`);
    }
    if (i > 0) {
      const login = seen.filter((u) => !u.startsWith(cb));
      if (login.length) throw new Error(`SSO: the browser was shown ${login.join(", ")} before the callback`);
    }
    const q = new URL(hit).searchParams;
    if (q.get("error")) throw new Error(`authorization error: ${hit}`);
    if (!q.get("code")) throw new Error(`no code in ${hit}`);
    results.push({ code: q.get("code"), state: q.get("state"), iss: q.get("iss"), login_page: loginPage });
  }
  if (violations.length) throw new Error(`CSP violations:\n  ${violations.join("\n  ")}`);
  process.stdout.write(JSON.stringify({ results, screenshot }) + "\n");
}

let status = 0;
try {
  await main();
} catch (e) {
  process.stderr.write(`browser.mjs FAILED: ${e.stack || e}\n`);
  status = 1;
} finally {
  if (context) await context.close().catch(() => {});
  if (server) server.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(status);
