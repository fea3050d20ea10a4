//! Backup and restore (issue 7), as docs/OPERATIONS.md section 3 describes it: back up the
//! database online (SQLite: `VACUUM INTO`; PostgreSQL: `pg_dump --format=custom`) and copy
//! `keys/`; restore both into a fresh location; `unicred migrate`, `unicred audit verify` and
//! `unicred serve` on the copy sign the user in with the client and password of before. The
//! same database with an empty or a foreign `keys/` refuses to start, naming the problem.
//!
//! SQLite by default; PostgreSQL when `UNICRED_TEST_DATABASE_URL` is a postgres URL (then
//! pg_dump and pg_restore must be on PATH).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};
use sqlx::Connection;

const PW: &str = "violet-harbour-lantern-42";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn postgres_base() -> Option<String> {
    std::env::var("UNICRED_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

/// The `unicred` binary on a restored copy: only these variables (unknown UNICRED_* are refused).
fn unicred(db_url: &str, keys: &Path, data: &Path, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_unicred"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("UNICRED_DATABASE_URL", db_url)
        .env("UNICRED_KEYS_DIR", keys)
        .env("UNICRED_DATA_DIR", data)
        .env("UNICRED_LISTEN", format!("127.0.0.1:{port}"))
        .env("UNICRED_PUBLIC_URL", format!("http://localhost:{port}"))
        .env("UNICRED_IP_RATE_PER_SECOND", "0")
        .env("UNICRED_LOG_FORMAT", "json");
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cp -a`: the key files keep their 0600 mode.
fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

async fn create_database(base: &str, name: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(base).await.expect("PostgreSQL reachable");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let _ = conn.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("database URL with a path");
    format!("{prefix}/{name}")
}

/// Starting `serve` on `db_url` with `keys` must fail at once with a one-line error.
fn refuses_to_start(db_url: &str, keys: &Path, data: &Path) -> String {
    let mut child = unicred(db_url, keys, data, free_port())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve with keys {} did not refuse to start", keys.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        status.code(),
        Some(1),
        "serve with keys {}: {status}\n{err}",
        keys.display()
    );
    err
}

#[tokio::test]
async fn backup_and_restore_with_keys_and_refusal_without_them() {
    // ------------------------------------------------------------------ the original
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let uid = s.user(&admin, "bank", "alice", PW).await;
    let (cid, csecret) = s
        .client(
            &admin,
            "bank",
            json!({"name": "backend", "authn_api": true,
                "grant_types": ["urn:unicred:grant-type:login-ticket", "client_credentials"]}),
        )
        .await;
    assert_eq!(s.authn("bank", &cid, &csecret, "alice", PW).await.status(), 200);
    let original_keys = s.keys_dir.clone();

    // ------------------------------------------------------------------ backup (online)
    let backup = tempfile::tempdir().unwrap();
    let pg = postgres_base();
    let dump = match &pg {
        Some(_) => {
            let file = backup.path().join("unicred.dump");
            run(Command::new("pg_dump")
                .args(["--format=custom", "--no-owner"])
                .arg(format!("--file={}", file.display()))
                .arg(&s.db_url));
            file
        }
        None => {
            // What `sqlite3 unicred.db "VACUUM INTO '…'"` does, on the running server's pool:
            // a consistent copy while it serves (the sqlite3 CLI is not needed).
            let file = backup.path().join("unicred.db");
            sqlx::query(sqlx::AssertSqlSafe(format!("vacuum into '{}'", file.display())))
                .execute(&s.state.db.pool)
                .await
                .expect("VACUUM INTO");
            file
        }
    };
    copy_dir(&original_keys, &backup.path().join("keys"));
    // Something after the backup: not in the restored copy.
    s.user(&admin, "bank", "bob", PW).await;
    // The original is gone (its temp dir and keys with it).
    let _ = s.stop().await;

    // ------------------------------------------------------------------ restore
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let keys = fresh.path().join("keys");
    copy_dir(&backup.path().join("keys"), &keys);
    let db_url = match &pg {
        Some(base) => {
            let url = create_database(base, &format!("unicred_restored_{}", uuid::Uuid::new_v4().simple())).await;
            run(Command::new("pg_restore")
                .args(["--no-owner", "--clean", "--if-exists"])
                .arg(format!("--dbname={url}"))
                .arg(&dump));
            url
        }
        None => {
            std::fs::copy(&dump, data.join("unicred.db")).unwrap();
            format!("sqlite://{}/unicred.db", data.display())
        }
    };
    let port = free_port();
    let out = run(unicred(&db_url, &keys, &data, port).arg("migrate"));
    assert!(out.contains("migrations applied"), "{out}");
    let report: Value =
        serde_json::from_str(&run(unicred(&db_url, &keys, &data, port).args(["audit", "verify"]))).unwrap();
    assert_eq!(report["ok"], true, "{report}");

    // Without the matching keys/: refused, with a message that says what to do.
    let empty = fresh.path().join("empty-keys");
    std::fs::create_dir_all(&empty).unwrap();
    let err = refuses_to_start(&db_url, &empty, &data);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("is empty but the database already holds data"),
        "empty keys/: {err}"
    );
    println!("empty keys/ refused: {}", err.trim());
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "no keys were generated for a database that holds data"
    );
    // A foreign keys/: generated by another, fresh installation.
    let other = tempfile::tempdir().unwrap();
    let other_db = match &pg {
        Some(base) => create_database(base, &format!("unicred_other_{}", uuid::Uuid::new_v4().simple())).await,
        None => format!("sqlite://{}/unicred.db", other.path().display()),
    };
    let foreign = other.path().join("keys");
    run(unicred(&other_db, &foreign, other.path(), free_port()).args(["bootstrap", "--json"]));
    assert!(std::fs::read_dir(&foreign).unwrap().count() > 0);
    let err = refuses_to_start(&db_url, &foreign, &data);
    assert!(
        err.contains("does not match the fingerprint recorded in the database"),
        "foreign keys/: {err}"
    );
    println!("foreign keys/ refused: {}", err.trim());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // With the keys/ of the backup: serves, and alice signs in with the client of before.
    let log = fresh.path().join("serve.log");
    let mut server = unicred(&db_url, &keys, &data, port)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
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
        if let Some(st) = server.try_wait().unwrap() {
            panic!(
                "serve on the restored copy exited {st}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "restored server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .post(format!("{base}/t/bank/authn"))
        .basic_auth(&cid, Some(&csecret))
        .json(&json!({"username": "alice", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "sign-in on the restored copy");
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["user_id"], uid.as_str());
    // The ticket becomes tokens signed with the tenant key the master key decrypts.
    let r = http
        .post(format!("{base}/t/bank/token"))
        .basic_auth(&cid, Some(&csecret))
        .form(&[
            ("grant_type", "urn:unicred:grant-type:login-ticket"),
            ("login_ticket", ok["login_ticket"].as_str().unwrap()),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let i: Value = http
        .post(format!("{base}/t/bank/introspect"))
        .basic_auth(&cid, Some(&csecret))
        .form(&[("token", t["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["sub"], uid.as_str(), "{i}");
    // bob was created after the backup: not there.
    let r = http
        .post(format!("{base}/t/bank/authn"))
        .basic_auth(&cid, Some(&csecret))
        .json(&json!({"username": "bob", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a user created after the backup");
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let st = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st}");
    println!(
        "backup/restore on {}: restored copy serves; empty and foreign keys/ refused",
        if pg.is_some() {
            "PostgreSQL (pg_dump/pg_restore)"
        } else {
            "SQLite (VACUUM INTO)"
        }
    );
}
