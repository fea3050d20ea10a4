#!/usr/bin/env python3
"""A relying party built on Authlib, run against a live unicred tenant.

Authlib (an OAuth 2.0 / OpenID Connect client library independent of this crate) does the
client's part: discovery metadata validation, the authorization URL with PKCE S256, state and
nonce, the code exchange, ID-token validation (signature against the JWKS, iss, aud, exp,
nonce, at_hash), refresh, and the userinfo call. The browser's part (authorize, the login
page, posting the credentials) is done with plain `requests`, stopping at the redirect to the
redirect URI.

Every option may also be given as an environment variable (E2E_ISSUER, E2E_CLIENT_ID, ...).
Exit status 0 and a JSON summary on stdout on success; otherwise a message on stderr and a
non-zero status.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import warnings
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

# The issuer of a test server is http://localhost:PORT/...: let Authlib accept plain HTTP.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

try:
    import requests
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oidc.discovery import OpenIDProviderMetadata

    with warnings.catch_warnings():
        # authlib.jose is deprecated in favour of joserfc but remains Authlib's JWT API in 1.x.
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebKey, jwt
        from authlib.oidc.core import CodeIDToken
except ImportError as e:  # A missing dependency is a failure, never a skip.
    print(f"rp_authlib: missing Python dependency ({e}); run: "
          "python3 -m pip install -r tests/e2e/requirements.txt", file=sys.stderr)
    sys.exit(3)


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def at_hash(access_token: str, alg: str) -> str:
    """OIDC Core 3.1.3.6: left half of the hash named by the ID token's alg (SHA-512 for EdDSA,
    whose only curve here is Ed25519)."""
    h = hashlib.sha512 if alg == "EdDSA" else {"RS256": hashlib.sha256, "ES256": hashlib.sha256}[alg]
    d = h(access_token.encode()).digest()
    return b64url(d[: len(d) // 2])


def jose_header(token: str) -> dict:
    seg = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


class HiddenFields(HTMLParser):
    """Collects the login form's inputs and the error paragraph's text."""

    def __init__(self):
        super().__init__()
        self.form = None
        self.action = None
        self.fields = {}
        self.error = None
        self._in_error = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.form = a.get("id")
            self.action = a.get("action")
        elif tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif a.get("id") == "error":
            self._in_error = True
            self.error = ""

    def handle_endtag(self, tag):
        self._in_error = False

    def handle_data(self, data):
        if self._in_error:
            self.error += data


def browser_login(http, authorize_url, redirect_uri, username, password):
    """Follows redirects from the authorization URL to the login page, posts the credentials,
    and returns the URL of the redirect to redirect_uri (not followed)."""
    url = authorize_url
    for _ in range(10):
        r = http.get(url, allow_redirects=False, timeout=10)
        if r.status_code in (301, 302, 303, 307, 308):
            url = urljoin(url, r.headers["Location"])
            check(not url.startswith(redirect_uri),
                  f"authorize redirected to the client before any login (no session expected): {url}")
            continue
        break
    else:
        raise Failure("too many redirects before the login page")
    check(r.status_code == 200, f"login page: HTTP {r.status_code}: {r.text[:500]}")
    check("text/html" in r.headers.get("content-type", ""), f"login page content-type {r.headers.get('content-type')}")
    check("content-security-policy" in r.headers, "login page sent no Content-Security-Policy")
    page = HiddenFields()
    page.feed(r.text)
    check(page.form == "login", f"no #login form on {url}: {r.text[:500]}")
    check({"tx", "csrf"} <= set(page.fields), f"login form lacks tx/csrf: {page.fields}")
    form = dict(page.fields, username=username, password=password)
    post_url = urljoin(url, page.action or url)
    r = http.post(post_url, data=form, allow_redirects=False, timeout=30)
    if r.status_code not in (302, 303):
        err = HiddenFields()
        err.feed(r.text)
        raise Failure(f"login POST: HTTP {r.status_code}, error={err.error!r}")
    loc = urljoin(post_url, r.headers["Location"])
    check(loc.startswith(redirect_uri), f"after login, redirect to {loc}, not to {redirect_uri} "
                                        "(consent page or error?)")
    return loc


def validate_id_token(id_token, jwks, issuer, client_id, expected_alg, nonce=None, access_token=None):
    header = jose_header(id_token)
    check(header.get("alg") == expected_alg, f"ID token alg {header.get('alg')!r}, expected {expected_alg!r}")
    check(header.get("kid"), "ID token header has no kid")
    check(any(k.get("kid") == header["kid"] for k in jwks["keys"]),
          f"kid {header['kid']} not in the JWKS")
    options = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    params = {"client_id": client_id}
    if nonce is not None:
        options["nonce"] = {"essential": True}
        params["nonce"] = nonce
    if access_token is not None:
        params["access_token"] = access_token
    keys = JsonWebKey.import_key_set(jwks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Signature verification against the JWKS (by kid); raises on a bad signature.
        claims = jwt.decode(id_token, keys, claims_cls=CodeIDToken,
                            claims_options=options, claims_params=params)
        # iss, aud, exp, iat, nonce, azp and at_hash (when present) per OIDC Core 3.1.3.7.
        claims.validate(now=int(time.time()), leeway=5)
    check(claims["exp"] > time.time(), "ID token expired")
    if access_token is not None:
        # Authlib checks at_hash only when present; here it must be, and must match.
        check("at_hash" in claims, "ID token has no at_hash")
        check(claims["at_hash"] == at_hash(access_token, expected_alg),
              f"at_hash {claims['at_hash']} != {at_hash(access_token, expected_alg)}")
    return claims


def run(a):
    http = requests.Session()
    http.headers["User-Agent"] = "unicred-e2e-authlib"

    # Discovery, validated by Authlib's OpenID Provider Metadata model.
    r = http.get(a.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10)
    check(r.status_code == 200, f"discovery: HTTP {r.status_code}")
    meta = OpenIDProviderMetadata(r.json())
    meta.validate()
    check(meta["issuer"] == a.issuer, f"discovery issuer {meta['issuer']!r} != {a.issuer!r}")
    check("S256" in meta.get("code_challenge_methods_supported", []), "S256 not supported")
    check(a.alg in meta["id_token_signing_alg_values_supported"], f"{a.alg} not advertised")
    jwks = http.get(meta["jwks_uri"], timeout=10).json()

    public = not a.client_secret
    client = OAuth2Session(
        client_id=a.client_id,
        client_secret=a.client_secret or None,
        token_endpoint_auth_method="none" if public else a.auth_method,
        scope=a.scope,
        redirect_uri=a.redirect_uri,
        code_challenge_method="S256",
        default_timeout=30,
    )
    verifier = generate_token(64)
    nonce = generate_token(24)
    auth_url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    q = parse_qs(urlparse(auth_url).query)
    check(q.get("code_challenge_method") == ["S256"] and q.get("code_challenge"), f"no PKCE in {auth_url}")

    callback = browser_login(http, auth_url, a.redirect_uri, a.username, a.password)
    cq = parse_qs(urlparse(callback).query)
    check("error" not in cq, f"authorization error: {cq}")
    check(cq.get("state") == [state], f"state {cq.get('state')} != {state}")
    check(cq.get("iss") == [meta["issuer"]], f"RFC 9207 iss {cq.get('iss')} != {meta['issuer']}")

    # Exchange (Authlib checks the state in the authorization response again).
    token = client.fetch_token(meta["token_endpoint"], authorization_response=callback,
                               code_verifier=verifier, state=state)
    check(token.get("token_type", "").lower() == "bearer", f"token_type {token.get('token_type')}")
    for k in ("access_token", "id_token", "refresh_token"):
        check(token.get(k), f"token response lacks {k}: {sorted(token)}")
    claims = validate_id_token(token["id_token"], jwks, meta["issuer"], a.client_id, a.alg,
                               nonce=nonce, access_token=token["access_token"])
    check(claims.get("preferred_username") in (None, a.username), f"preferred_username {claims.get('preferred_username')}")

    # Refresh (Authlib), then the refreshed ID token if one is returned.
    old_rt = token["refresh_token"]
    refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=old_rt)
    check(refreshed.get("access_token") and refreshed["access_token"] != token["access_token"],
          "refresh returned no new access token")
    check(refreshed.get("refresh_token") and refreshed["refresh_token"] != old_rt,
          "refresh token was not rotated")
    if refreshed.get("id_token"):
        c2 = validate_id_token(refreshed["id_token"], jwks, meta["issuer"], a.client_id, a.alg,
                               access_token=refreshed["access_token"])
        check(c2["sub"] == claims["sub"], "refreshed ID token has another sub")

    # Userinfo with the refreshed access token (Authlib puts it in the Authorization header).
    r = client.get(meta["userinfo_endpoint"], timeout=10)
    check(r.status_code == 200, f"userinfo: HTTP {r.status_code}: {r.text[:300]}")
    ui = r.json()
    check(ui.get("sub") == claims["sub"], f"userinfo sub {ui.get('sub')} != {claims['sub']}")
    check(ui.get("preferred_username") == a.username, f"userinfo preferred_username {ui.get('preferred_username')}")

    return {
        "ok": True,
        "client": "public" if public else a.auth_method,
        "alg": jose_header(token["id_token"])["alg"],
        "sub": claims["sub"],
        "at_hash": claims["at_hash"],
        "refreshed_id_token": bool(refreshed.get("id_token")),
    }


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--issuer", default=env("E2E_ISSUER"))
    p.add_argument("--client-id", default=env("E2E_CLIENT_ID"))
    p.add_argument("--client-secret", default=env("E2E_CLIENT_SECRET", ""),
                   help="empty for a public client (PKCE only)")
    p.add_argument("--auth-method", default=env("E2E_AUTH_METHOD", "client_secret_basic"),
                   choices=["client_secret_basic", "client_secret_post"])
    p.add_argument("--redirect-uri", default=env("E2E_REDIRECT_URI"))
    p.add_argument("--username", default=env("E2E_USERNAME"))
    p.add_argument("--password", default=env("E2E_PASSWORD"))
    p.add_argument("--alg", default=env("E2E_ALG", "ES256"), choices=["RS256", "ES256", "EdDSA"])
    p.add_argument("--scope", default=env("E2E_SCOPE", "openid profile offline_access"))
    a = p.parse_args()
    missing = [n for n in ("issuer", "client_id", "redirect_uri", "username", "password") if not getattr(a, n)]
    if missing:
        p.error("missing: " + ", ".join(missing))
    try:
        out = run(a)
    except Failure as e:
        print(f"rp_authlib FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # Authlib's own validation errors, HTTP errors, ...
        print(f"rp_authlib FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
