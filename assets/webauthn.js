// unicred's login pages: WebAuthn through the pages' own endpoints. Served from
// /assets/webauthn.js (the pages' CSP allows only same-origin scripts, no inline code).
//  - the second-factor page (#webauthn-step in form#mfa's page): a security key or passkey
//    for the user who just gave a password (then, for a temporary password, the page that
//    replaces it);
//  - the login page (#passkey-step beside form#login): "Sign in with a passkey", a
//    discoverable credential with user verification and no username.
//  - the enrolment page (#enroll-webauthn-step), for tenants that require a second factor:
//    registers a passkey or security key with navigator.credentials.create, then shows the
//    recovery codes the server answers with and the form that continues the sign-in.
// Each asks its options endpoint for a request, runs the browser's WebAuthn call, posts the
// answer (as the JSON webauthn-rs reads: base64url without padding) and goes on.
(function () {
  "use strict";

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

  async function post(url, body, fallback) {
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
    if (!r.ok || !data) throw new Error((data && data.error) || fallback);
    return data;
  }

  // One button: options → navigator.credentials.get → assertion → redirect.
  function wire(step, button, errorBox, form, names, notUsed) {
    function fields() {
      var p = new URLSearchParams();
      names.forEach(function (n) {
        p.append(n, form.elements[n].value);
      });
      return p;
    }

    async function signIn() {
      button.disabled = true;
      errorBox.hidden = true;
      var options = await post(step.dataset.options, fields(), notUsed);
      var pk = options.publicKey;
      pk.challenge = b64urlToBytes(pk.challenge);
      (pk.allowCredentials || []).forEach(function (c) {
        c.id = b64urlToBytes(c.id);
      });
      var cred;
      try {
        cred = await navigator.credentials.get({ publicKey: pk });
      } catch (e) {
        throw new Error(notUsed);
      }
      if (!cred) throw new Error(notUsed);
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
      var done = await post(step.dataset.action, body, notUsed);
      if (done.continue) {
        // A temporary password to replace first: the server's page for it, by a form post
        // (the step's state token stays out of URLs).
        var next = document.createElement("form");
        next.method = "post";
        next.action = done.continue.action;
        [["tx", form.elements.tx.value], ["csrf", form.elements.csrf.value], ["state", done.continue.state]].forEach(
          function (kv) {
            var input = document.createElement("input");
            input.type = "hidden";
            input.name = kv[0];
            input.value = kv[1];
            next.appendChild(input);
          },
        );
        document.body.appendChild(next);
        next.submit();
        return;
      }
      window.location.assign(done.redirect);
    }

    button.addEventListener("click", function () {
      signIn().catch(function (e) {
        errorBox.textContent = e.message;
        errorBox.hidden = false;
        button.disabled = false;
      });
    });
  }

  // Enrolment: options → navigator.credentials.create → registration → recovery codes.
  function wireEnrolment(step, button, errorBox, form) {
    var notUsed = "The passkey or security key was not registered.";
    function fields() {
      var p = new URLSearchParams();
      ["tx", "csrf", "state"].forEach(function (n) {
        p.append(n, form.elements[n].value);
      });
      return p;
    }

    async function register() {
      button.disabled = true;
      errorBox.hidden = true;
      var options = await post(step.dataset.options, fields(), notUsed);
      var pk = options.publicKey;
      pk.challenge = b64urlToBytes(pk.challenge);
      pk.user.id = b64urlToBytes(pk.user.id);
      (pk.excludeCredentials || []).forEach(function (c) {
        c.id = b64urlToBytes(c.id);
      });
      var cred;
      try {
        cred = await navigator.credentials.create({ publicKey: pk });
      } catch (e) {
        throw new Error(notUsed);
      }
      if (!cred) throw new Error(notUsed);
      var credential = {
        id: cred.id,
        rawId: bytesToB64url(cred.rawId),
        type: cred.type,
        response: {
          attestationObject: bytesToB64url(cred.response.attestationObject),
          clientDataJSON: bytesToB64url(cred.response.clientDataJSON),
        },
        extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      };
      var body = fields();
      body.append("credential", JSON.stringify(credential));
      var done = await post(step.dataset.action, body, notUsed);
      var list = document.getElementById("recovery-codes");
      done.recovery_codes.forEach(function (c) {
        var li = document.createElement("li");
        var code = document.createElement("code");
        code.textContent = c;
        li.appendChild(code);
        list.appendChild(li);
      });
      var next = document.getElementById("continue");
      next.elements.state.value = done.state;
      var totp = document.getElementById("enroll-totp");
      if (totp) totp.hidden = true;
      step.hidden = true;
      document.getElementById("enrolled").hidden = false;
    }

    button.addEventListener("click", function () {
      register().catch(function (e) {
        errorBox.textContent = e.message;
        errorBox.hidden = false;
        button.disabled = false;
      });
    });
  }

  var supported = !!(window.PublicKeyCredential && navigator.credentials);
  (function () {
    var step = document.getElementById("enroll-webauthn-step");
    var button = document.getElementById("enroll-webauthn");
    var errorBox = document.getElementById("enroll-webauthn-error");
    var form = document.getElementById("enroll-webauthn-form");
    if (!step || !button || !errorBox || !form || !document.getElementById("enrolled")) return;
    if (!supported) {
      step.hidden = true;
      return;
    }
    wireEnrolment(step, button, errorBox, form);
  })();
  [
    ["webauthn-step", "webauthn", "webauthn-error", "mfa", ["tx", "csrf", "state"],
      "The security key or passkey was not used."],
    ["passkey-step", "passkey", "passkey-error", "login", ["tx", "csrf"], "The passkey was not used."],
  ].forEach(function (c) {
    var step = document.getElementById(c[0]);
    var button = document.getElementById(c[1]);
    var errorBox = document.getElementById(c[2]);
    var form = document.getElementById(c[3]);
    if (!step || !button || !errorBox || !form) return;
    if (!supported) {
      step.hidden = true;
      return;
    }
    wire(step, button, errorBox, form, c[4], c[5]);
  });
})();
