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

import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { chromiumOrExit, fail, openBrowser, run } from "./harness.mjs";

const { chromium, executablePath } = await chromiumOrExit("browser.mjs");

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
  fail("browser.mjs", "usage: browser.mjs --redirect-uri URI --username U --password P AUTHZ_URL [AUTHZ_URL ...]", 2);
}
const timeout = Number(opt.timeout);
const screenshot = path.join(os.tmpdir(), `unicred-e2e-login-${process.pid}.png`);

async function main({ page, violations, nextCallback }) {
  const seen = [];
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) seen.push(f.url());
  });

  const results = [];
  for (const [i, url] of urls.entries()) {
    seen.length = 0;
    const cbHit = nextCallback(timeout);
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

await run(
  "browser.mjs",
  () => openBrowser({ chromium, executablePath, prefix: "unicred-e2e-chromium-", timeout, redirectUri: cb }),
  main,
);
