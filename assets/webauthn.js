// unicred's second-factor page: sign in with a security key or passkey. Served from
// /assets/webauthn.js (the pages' CSP allows only same-origin scripts, no inline code).
// Asks the page's options endpoint for an assertion request, runs navigator.credentials.get,
// posts the assertion (as the JSON webauthn-rs reads: base64url without padding) and follows
// the redirect URL the server answers with.
(function () {
  "use strict";
  var step = document.getElementById("webauthn-step");
  var button = document.getElementById("webauthn");
  var form = document.getElementById("mfa");
  var errorBox = document.getElementById("webauthn-error");
  if (!step || !button || !form) return;
  if (!window.PublicKeyCredential || !navigator.credentials) {
    step.hidden = true;
    return;
  }

  function b64urlToBytes(s) {
    var b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bytesToB64url(buf) {
    var bytes = new Uint8Array(buf);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fields() {
    var p = new URLSearchParams();
    ["tx", "csrf", "state"].forEach(function (n) {
      p.append(n, form.elements[n].value);
    });
    return p;
  }

  function showError(msg) {
    errorBox.textContent = msg;
    errorBox.hidden = false;
    button.disabled = false;
  }

  async function post(url, body) {
    var r = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: body,
      credentials: "same-origin",
      redirect: "manual",
    });
    var data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (!r.ok || !data) {
      throw new Error((data && data.error) || "The security key could not be used. Please try again.");
    }
    return data;
  }

  async function signIn() {
    button.disabled = true;
    errorBox.hidden = true;
    var options = await post(step.dataset.options, fields());
    var pk = options.publicKey;
    pk.challenge = b64urlToBytes(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) {
      c.id = b64urlToBytes(c.id);
    });
    var cred;
    try {
      cred = await navigator.credentials.get({ publicKey: pk });
    } catch (e) {
      throw new Error("The security key or passkey was not used.");
    }
    if (!cred) throw new Error("The security key or passkey was not used.");
    var resp = cred.response;
    var credential = {
      id: cred.id,
      rawId: bytesToB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: bytesToB64url(resp.authenticatorData),
        clientDataJSON: bytesToB64url(resp.clientDataJSON),
        signature: bytesToB64url(resp.signature),
        userHandle: resp.userHandle ? bytesToB64url(resp.userHandle) : null,
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    };
    var body = fields();
    body.append("credential", JSON.stringify(credential));
    var done = await post(step.dataset.action, body);
    window.location.assign(done.redirect);
  }

  button.addEventListener("click", function () {
    signIn().catch(function (e) {
      showError(e.message);
    });
  });
})();
