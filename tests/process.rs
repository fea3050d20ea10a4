//! The real binary: exit codes, graceful shutdown on SIGTERM, and that no secret, token or
//! password ever reaches a log line.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_unicred"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(dir: &std::path::Path, port: u16) -> Env {
        let mut vars = vec![
            ("UNICRED_DATA_DIR".into(), dir.join("data").display().to_string()),
            ("UNICRED_KEYS_DIR".into(), dir.join("keys").display().to_string()),
            ("UNICRED_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("UNICRED_PUBLIC_URL".into(), format!("http://localhost:{port}")),
            ("UNICRED_LOG_FORMAT".into(), "json".into()),
            ("UNICRED_IP_RATE_PER_SECOND".into(), "0".into()),
            ("RUST_LOG".into(), "debug".into()),
        ];
        if let Ok(db) = std::env::var("UNICRED_TEST_DATABASE_URL")
            && db.starts_with("postgres")
        {
            vars.push(("UNICRED_DATABASE_URL".into(), db));
        }
        Env { vars }
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.args(args)
            .envs(self.vars.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        c
    }
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    let out = bin()
        .args(["migrate"])
        .env("UNICRED_HASH_WORKERS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("hash_workers"), "{err}");
    let out = bin().args(["serve"]).env("UNICRED_LISTEM", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNICRED_LISTEM"));
    let out = bin().args(["no-such-command"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn full_run_logs_no_secret_and_shuts_down_gracefully() {
    if std::env::var("UNICRED_TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres")) {
        // One shared database here: this test runs on SQLite only; the same code paths are
        // covered on PostgreSQL by the in-process suites.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = Env::new(dir.path(), port);
    // A small hashing queue (a tenant's share: 1) so a burst of sign-ins is shed.
    env.vars.push(("UNICRED_HASH_WORKERS".into(), "1".into()));
    env.vars.push(("UNICRED_HASH_QUEUE".into(), "4".into()));
    let log_path = dir.path().join("serve.log");
    let mut server = env
        .cmd(&["serve"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = env.cmd(&["bootstrap", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let boot: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (aid, asecret) = (
        boot["client_id"].as_str().unwrap(),
        boot["client_secret"].as_str().unwrap(),
    );
    let mut secrets: Vec<String> = vec![asecret.to_string()];

    let tok: Value = http
        .post(format!("{base}/t/system/token"))
        .basic_auth(aid, Some(asecret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = tok["access_token"].as_str().unwrap().to_string();
    secrets.push(admin.clone());
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    assert_eq!(
        post("/admin/v1/tenants", json!({"slug": "bank"}))
            .await
            .unwrap()
            .status(),
        201
    );
    let password = "amber-falcon-meridian-7";
    secrets.push(password.into());
    assert_eq!(
        post(
            "/admin/v1/tenants/bank/users",
            json!({"username": "alice", "password": password})
        )
        .await
        .unwrap()
        .status(),
        201
    );
    let c: Value = post(
        "/admin/v1/tenants/bank/clients",
        json!({"name": "be", "authn_api": true, "grant_types": ["urn:unicred:grant-type:login-ticket", "client_credentials"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (cid, csecret) = (
        c["client_id"].as_str().unwrap().to_string(),
        c["client_secret"].as_str().unwrap().to_string(),
    );
    secrets.push(csecret.clone());
    let wrong = "wrong-password-that-must-not-be-logged";
    secrets.push(wrong.into());
    let r = http
        .post(format!("{base}/t/bank/authn"))
        .basic_auth(&cid, Some(&csecret))
        .json(&json!({"username": "alice", "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let ok: Value = http
        .post(format!("{base}/t/bank/authn"))
        .basic_auth(&cid, Some(&csecret))
        .json(&json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ok["login_ticket"].as_str().unwrap().to_string();
    secrets.push(ticket.clone());
    let t: Value = http
        .post(format!("{base}/t/bank/token"))
        .basic_auth(&cid, Some(&csecret))
        .form(&[
            ("grant_type", "urn:unicred:grant-type:login-ticket"),
            ("login_ticket", &ticket),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = t["access_token"].as_str().unwrap().to_string();
    secrets.push(at.clone());
    secrets.push(t["id_token"].as_str().unwrap().to_string());
    let r = http
        .post(format!("{base}/t/bank/revoke"))
        .basic_auth(&cid, Some(&csecret))
        .form(&[("token", &at)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A burst beyond the tenant's share of the hashing queue is shed with 503s, which are
    // counted, not logged one line each (checked in the log below).
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let (http, base, cid, csecret) = (http.clone(), base.clone(), cid.clone(), csecret.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/t/bank/authn"))
                    .basic_auth(&cid, Some(&csecret))
                    .json(&json!({"username": format!("burst{i}"), "password": "wrong-burst-password"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut shed = 0;
    for b in burst {
        match b.await.unwrap() {
            503 => shed += 1,
            st => assert_eq!(st, 401),
        }
    }
    assert!(shed > 0, "the burst overflowed the tenant's share");

    // Graceful shutdown: a slow request in flight when SIGTERM arrives still completes.
    let r = http
        .patch(format!("{base}/admin/v1/tenants/bank"))
        .bearer_auth(&admin)
        .json(&json!({"policy": {"argon2": {"m_kib": 262144, "t": 4, "p": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let slow_pw = "cobalt-orchard-whisper-93";
    secrets.push(slow_pw.into());
    let slow = tokio::spawn({
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        async move {
            http.post(format!("{base}/admin/v1/tenants/bank/users"))
                .bearer_auth(admin)
                .json(&json!({"username": "bob", "password": slow_pw}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(40)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(slow.await.unwrap().unwrap(), 201, "the in-flight request completes");
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("request_id"), "requests are logged with their id");
    assert!(log.contains("shutting down"));
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let shed_503 = |l: &&Value| {
        l["fields"]["status"] == 503
            || l["fields"]["classification"]
                .as_str()
                .is_some_and(|c| c.contains("503"))
    };
    assert_eq!(
        lines.iter().filter(shed_503).filter(|l| l["level"] == "DEBUG").count(),
        shed,
        "each shed request appears once, at debug level"
    );
    let loud: Vec<_> = lines
        .iter()
        .filter(shed_503)
        .filter(|l| l["level"] != "DEBUG")
        .collect();
    assert!(loud.is_empty(), "shed requests logged above debug: {loud:#?}");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log: {}…", &s[..8]);
        // Also not the base64 of a Basic credential.
        assert!(
            !log.contains(&s[s.len().saturating_sub(16)..]),
            "part of a secret reached the log"
        );
    }
}
