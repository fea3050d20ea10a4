// What the browser scripts share: the system Chromium under playwright-core, a watcher for
// Content-Security-Policy violations, and a local server answering the relying party's
// redirect URI (its host and port must be free).

import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";

export function fail(script, msg, code = 1) {
  process.stderr.write(`${script} FAILED: ${msg}\n`);
  process.exit(code);
}

/// playwright-core and the Chromium binary, or exit 3 saying how to install them.
export async function chromiumOrExit(script) {
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (e) {
    fail(script, `playwright-core is not installed (${e.message}); run: (cd tests/e2e && npm ci)`, 3);
  }
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) fail(script, `no Chromium at ${executablePath}: apt-get install -y chromium`, 3);
  return { chromium, executablePath };
}

/// A fresh headless browser with one page. `violations` collects CSP reports and page errors;
/// `nextCallback(ms)` resolves with the next hit on `redirectUri`.
export async function openBrowser({ chromium, executablePath, prefix, timeout, redirectUri }) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const state = { context: null, server: null };
  const close = async () => {
    if (state.context) await state.context.close().catch(() => {});
    if (state.server) state.server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  const context = (state.context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  }));
  context.setDefaultTimeout(timeout);
  context.setDefaultNavigationTimeout(timeout);

  // CSP violations: the console's "Refused to ..." reports and the DOM event (an init script
  // runs outside the page's CSP).
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`securitypolicyviolation: ${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });

  let onCallback = null;
  const cbUrl = new URL(redirectUri);
  const server = (state.server = http.createServer((req, res) => {
    const hit = new URL(req.url, redirectUri).href;
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("callback captured\n");
    if (hit.startsWith(redirectUri) && onCallback) onCallback(hit);
  }));
  await new Promise((resolve, reject) => {
    server.once("error", (e) => reject(new Error(`cannot serve the redirect URI ${redirectUri}: ${e.message}`)));
    server.listen(Number(cbUrl.port || 80), cbUrl.hostname, resolve);
  });
  const nextCallback = (ms) => {
    const p = new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no redirect to ${redirectUri} within ${ms} ms`)), ms);
      onCallback = (u) => {
        clearTimeout(t);
        onCallback = null;
        resolve(u);
      };
    });
    p.catch(() => {});
    return p;
  };

  const violations = [];
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
  return { context, page, violations, nextCallback, close };
}

/// Runs `main(browser)` with the browser opened by `open()`, reports, cleans up, exits.
export async function run(script, open, main) {
  let status = 0;
  let browser = null;
  try {
    browser = await open();
    await main(browser);
  } catch (e) {
    process.stderr.write(`${script} FAILED: ${e.stack || e}\n`);
    status = 1;
  } finally {
    if (browser) await browser.close();
  }
  process.exit(status);
}
