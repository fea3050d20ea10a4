#!/usr/bin/env node
// A real browser signs in with a passkey as second factor: playwright-core driving the system
// Chromium, with a CDP virtual authenticator (CTAP2, user verification).
//
//   node webauthn.mjs --redirect-uri URI --username U --password P --account-token T \
//        --origin ISSUER_ORIGIN --tenant SLUG AUTHZ_URL
//
// First the passkey is registered through the account API (register/options, then register),
// from a page of the issuer's origin with navigator.credentials.create. Then AUTHZ_URL: the
// login page (#username, #password, #submit), the second-factor page's #webauthn button (the
// served script runs navigator.credentials.get), and the redirect to the redirect URI, which
// this script serves itself on the redirect URI's host and port. No Content-Security-Policy
// violation may be reported on the way.
//
// With --passwordless, the login page's "Sign in with a passkey" button (#passkey) is used
// instead: no username, no password. With --foreign AUTHZ_URL (another tenant's authorize
// URL), that tenant's login page is tried first with the same passkey, which must be refused
// (#passkey-error shown, no redirect).
//
// With --new-password NP, the password is temporary: after the passkey, the page that replaces
// it (form#password-change) must follow; NP is entered there, and only then the redirect.
//
// With --enrol (no --account-token), nothing is registered beforehand: the tenant requires a
// second factor, and after the password the enrolment page's #enroll-webauthn button
// registers the key (navigator.credentials.create); the recovery codes are shown and
// #continue-submit completes the sign-in.
//
// Prints {"code","state","iss","webauthn_button":true} on stdout (plus "foreign_refused", the
// error shown, with --foreign). Exit 0 on success.
// Environment: CHROMIUM (default /usr/bin/chromium), E2E_DEBUG.

import { parseArgs } from "node:util";

import { chromiumOrExit, fail, openBrowser, run } from "./harness.mjs";

const { chromium, executablePath } = await chromiumOrExit("webauthn.mjs");

const { values: opt, positionals: urls } = parseArgs({
  allowPositionals: true,
  options: {
    "redirect-uri": { type: "string" },
    username: { type: "string" },
    password: { type: "string" },
    "account-token": { type: "string" },
    origin: { type: "string" },
    tenant: { type: "string" },
    passwordless: { type: "boolean", default: false },
    enrol: { type: "boolean", default: false },
    foreign: { type: "string" },
    "new-password": { type: "string" },
    timeout: { type: "string", default: "15000" },
  },
});
const cb = opt["redirect-uri"];
if (!cb || !opt.username || !opt.password || !(opt["account-token"] || opt.enrol) || !opt.origin || !opt.tenant || urls.length !== 1) {
  fail("webauthn.mjs", "usage: webauthn.mjs --redirect-uri URI --username U --password P (--account-token T | --enrol) --origin O --tenant S AUTHZ_URL", 2);
}
const timeout = Number(opt.timeout);

async function main({ context, page, violations, nextCallback }) {
  // The password, then the enrolment page: register the key, read the recovery codes,
  // continue.
  async function enrolOnThePage() {
    await page.goto(urls[0]);
    await page.locator("form#login").waitFor({ state: "visible" });
    await page.fill("#username", opt.username);
    await page.fill("#password", opt.password);
    await page.click("#submit");
    const button = page.locator("#enroll-webauthn");
    await button.waitFor({ state: "visible" });
    if (violations.length) throw new Error(`CSP violations before enrolment:\n  ${violations.join("\n  ")}`);
    await button.click();
    try {
      await page.locator("#enrolled").waitFor({ state: "visible" });
    } catch (e) {
      const err = await page.locator("#enroll-webauthn-error").textContent({ timeout: 500 }).catch(() => null);
      throw new Error(`${e.message}${err ? `; #enroll-webauthn-error: ${err}` : ""}`);
    }
    recoveryCodes = await page.locator("#recovery-codes li").count();
    await page.click("#continue-submit");
  }

  function finish(hit, codes) {
    if (violations.length) throw new Error(`CSP violations:\n  ${violations.join("\n  ")}`);
    const q = new URL(hit).searchParams;
    if (q.get("error")) throw new Error(`authorization error: ${hit}`);
    if (!q.get("code")) throw new Error(`no code in ${hit}`);
    process.stdout.write(
      JSON.stringify({ code: q.get("code"), state: q.get("state"), iss: q.get("iss"), recovery_codes: codes }) + "\n",
    );
  }

  const cbHit = nextCallback(3 * timeout);

  // The virtual authenticator: a platform-like CTAP2 key that verifies the user.
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  let recoveryCodes;
  if (opt.enrol) {
    await enrolOnThePage();
  } else {
    // Registration through the account API, from a page of the issuer's origin.
    await page.goto(`${opt.origin}/healthz`);
    const registered = await page.evaluate(
      async ({ base, token }) => {
        const dec = (s) => {
          let b = s.replace(/-/g, "+").replace(/_/g, "/");
          while (b.length % 4) b += "=";
          return Uint8Array.from(atob(b), (c) => c.charCodeAt(0)).buffer;
        };
        const enc = (buf) =>
          btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
        const call = async (p, body) => {
          const r = await fetch(`${base}${p}`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify(body),
          });
          const j = await r.json().catch(() => null);
          if (!r.ok) throw new Error(`${p}: ${r.status} ${JSON.stringify(j)}`);
          return j;
        };
        const opts = await call("/account/webauthn/register/options", { name: "Virtual key" });
        const pk = opts.publicKey;
        pk.challenge = dec(pk.challenge);
        pk.user.id = dec(pk.user.id);
        (pk.excludeCredentials || []).forEach((c) => (c.id = dec(c.id)));
        const c = await navigator.credentials.create({ publicKey: pk });
        const credential = {
          id: c.id,
          rawId: enc(c.rawId),
          type: c.type,
          response: {
            attestationObject: enc(c.response.attestationObject),
            clientDataJSON: enc(c.response.clientDataJSON),
          },
          extensions: c.getClientExtensionResults(),
        };
        return call("/account/webauthn/register", { credential });
      },
      { base: `${opt.origin}/t/${opt.tenant}`, token: opt["account-token"] },
    );
    if (!registered.factor_id) throw new Error(`registration: ${JSON.stringify(registered)}`);
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    if (credentials.length !== 1) throw new Error(`the authenticator holds ${credentials.length} credentials`);
    if (opt.passwordless && !credentials[0].isResidentCredential) throw new Error("the passkey is not discoverable");
  }

  // Another tenant's login page offers the same passkey (one relying party for every
  // tenant) but must refuse it.
  let foreignRefused;
  if (opt.foreign) {
    await page.goto(opt.foreign);
    await page.locator("#passkey").click();
    const err = page.locator("#passkey-error");
    await err.waitFor({ state: "visible" });
    foreignRefused = await err.textContent();
    if (!page.url().startsWith(new URL(opt.foreign).origin)) throw new Error(`left the login page: ${page.url()}`);
  }

  if (opt.enrol) {
    const hit = await cbHit;
    finish(hit, recoveryCodes);
    return;
  }

  await page.goto(urls[0]);
  await page.locator("form#login").waitFor({ state: "visible" });
  let button;
  if (opt.passwordless) {
    // The login page's own passkey button: no username, no password.
    button = page.locator("#passkey");
  } else {
    // The password, then the second-factor page's passkey button.
    await page.fill("#username", opt.username);
    await page.fill("#password", opt.password);
    await page.click("#submit");
    button = page.locator("#webauthn");
  }
  await button.waitFor({ state: "visible" });
  if (violations.length) throw new Error(`CSP violations before the passkey step:\n  ${violations.join("\n  ")}`);
  await button.click();
  let hit;
  try {
    if (opt["new-password"]) {
      await page.locator("form#password-change").waitFor({ state: "visible", timeout });
      await page.fill("#new_password", opt["new-password"]);
      await page.click("#submit");
    }
    hit = await cbHit;
  } catch (e) {
    const box = opt.passwordless ? "#passkey-error" : "#webauthn-error";
    const err = await page.locator(box).textContent({ timeout: 500 }).catch(() => null);
    throw new Error(`${e.message}; page ${page.url()}${err ? `, ${box}: ${err}` : ""}`);
  }
  if (violations.length) throw new Error(`CSP violations:\n  ${violations.join("\n  ")}`);
  const { credentials: after } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  const q = new URL(hit).searchParams;
  if (q.get("error")) throw new Error(`authorization error: ${hit}`);
  if (!q.get("code")) throw new Error(`no code in ${hit}`);
  process.stdout.write(
    JSON.stringify({ code: q.get("code"), state: q.get("state"), iss: q.get("iss"), webauthn_button: true,
      sign_count: after[0]?.signCount, foreign_refused: foreignRefused }) + "\n",
  );
}

await run(
  "webauthn.mjs",
  () => openBrowser({ chromium, executablePath, prefix: "unicred-e2e-webauthn-", timeout, redirectUri: cb }),
  main,
);
