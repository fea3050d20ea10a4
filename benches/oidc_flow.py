#!/usr/bin/env python3
"""Full authorization-code flows (authorize → login page → password → code → token) and
refresh-token rotations per second against a running unicred, on loopback, standard library
only. Usage: oidc_flow.py BASE ISSUER CLIENT_ID CLIENT_SECRET PASSWORD USERS SECONDS THREADS"""
import base64, http.client, json, re, sys, threading, time, urllib.parse

base, issuer, cid, secret, password, users, seconds, threads = sys.argv[1:9]
users, seconds, threads = int(users), float(seconds), int(threads)
host, port = urllib.parse.urlparse(base).hostname, urllib.parse.urlparse(base).port
tenant_path = urllib.parse.urlparse(issuer).path
cb = "http://127.0.0.1:9/cb"
auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()

def req(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()

def local(url):  # the issuer says localhost; talk to 127.0.0.1
    u = urllib.parse.urlparse(url)
    return u.path + ("?" + u.query if u.query else "")

def flow(conn, user):
    q = urllib.parse.urlencode({"response_type": "code", "client_id": cid, "redirect_uri": cb, "scope": "openid offline_access", "state": "s"})
    st, h, _ = req(conn, "GET", f"{tenant_path}/authorize?{q}")
    assert st == 303, st
    st, h, body = req(conn, "GET", local(h["location"]))
    assert st == 200, st
    page = body.decode()
    tx = re.search(r'name="tx" value="([^"]+)"', page).group(1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"tx": tx, "csrf": csrf, "username": user, "password": password})
    st, h, _ = req(conn, "POST", f"{tenant_path}/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 303 and h["location"].startswith(cb), (st, h.get("location"))
    code = urllib.parse.parse_qs(urllib.parse.urlparse(h["location"]).query)["code"][0]
    form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": cb})
    st, h, body = req(conn, "POST", f"{tenant_path}/token", form, {"Content-Type": "application/x-www-form-urlencoded", "Authorization": auth})
    assert st == 200, (st, body)
    return json.loads(body)["refresh_token"]

def refresh(conn, rt):
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": rt})
    st, h, body = req(conn, "POST", f"{tenant_path}/token", form, {"Content-Type": "application/x-www-form-urlencoded", "Authorization": auth})
    assert st == 200, (st, body)
    return json.loads(body)["refresh_token"]

def run(kind):
    counts, errors, stop = [0] * threads, [0] * threads, time.time() + seconds
    def worker(i):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        user = f"user{i % users}"
        rt = flow(conn, user) if kind == "refresh" else None
        while time.time() < stop:
            try:
                if kind == "flow":
                    flow(conn, user)
                else:
                    rt = refresh(conn, rt)
                counts[i] += 1
            except Exception as e:  # counted, then a fresh connection
                errors[i] += 1
                print(f"{kind} error: {e!r}", file=sys.stderr)
                conn = http.client.HTTPConnection(host, port, timeout=30)
                if kind == "refresh":
                    rt = flow(conn, user)
    start = time.time()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    took = time.time() - start
    return sum(counts) / took, sum(errors)

flows, ferr = run("flow")
refreshes, rerr = run("refresh")
print(json.dumps({"code_flows_per_s": round(flows, 1), "flow_errors": ferr, "refreshes_per_s": round(refreshes, 1), "refresh_errors": rerr, "threads": threads, "seconds": seconds}))
