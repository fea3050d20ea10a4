//! Test harness: the real server on 127.0.0.1:0 with a fresh database — SQLite in a temp dir,
//! or a uniquely named PostgreSQL database when `UNICRED_TEST_DATABASE_URL` is a postgres URL.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;
use unicred::{AppState, Config};

pub struct Server {
    pub url: String,
    pub state: AppState,
    pub db_url: String,
    pub keys_dir: PathBuf,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// A fresh, empty database URL for this test.
pub async fn fresh_database(tmp: &Path) -> String {
    match std::env::var("UNICRED_TEST_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            let name = format!("unicred_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base).await.expect("PostgreSQL reachable");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let (prefix, _) = base.rsplit_once('/').expect("database URL with a path");
            format!("{prefix}/{name}")
        }
        _ => format!("sqlite://{}/unicred.db", tmp.display()),
    }
}

pub fn test_config(db_url: &str, keys_dir: &Path, data_dir: &Path) -> Config {
    Config {
        database_url: unicred::config::Secret(db_url.to_string()),
        keys_dir: keys_dir.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        hash_workers: 2,
        hash_queue: 32,
        database_max_connections: 5,
        // The rate limiter has its own test; elsewhere it would only add noise.
        // The legacy fixtures include an argon2 hash above this bound (m = 128 MiB).
        argon2_max_m_kib: 65536,
        ip_rate_per_second: 0,
        client_rate_per_second: 0,
        ..Config::default()
    }
}

impl Server {
    pub async fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let db_url = fresh_database(tmp.path()).await;
        let keys = tmp.path().join("keys");
        let config = test_config(&db_url, &keys, tmp.path());
        Server::start_with(config, Some(tmp)).await
    }

    /// Binds first (the public URL needs the port), builds the state (migrations, keys), then
    /// serves: no sleeping for readiness.
    pub async fn start_with(mut config: Config, tmp: Option<tempfile::TempDir>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Keep a public URL the caller chose (replicas share one); else name this port.
        if config.public_url.as_str() == "http://localhost:8080/" {
            config.public_url = format!("http://localhost:{port}").parse().unwrap();
        }
        let db_url = config.database_url();
        let keys_dir = config.keys_dir.clone();
        let state = AppState::build(config).await.expect("server state");
        let (tx, rx) = oneshot::channel::<()>();
        let s = state.clone();
        let task = tokio::spawn(async move {
            unicred::serve(listener, s, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            url: format!("http://127.0.0.1:{port}"),
            state,
            db_url,
            keys_dir,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            _tmp: tmp,
        }
    }

    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.state.db.pool.close().await;
        self._tmp.take()
    }

    pub fn issuer(&self, tenant: &str) -> String {
        self.state.config.issuer(tenant)
    }

    /// `unicred bootstrap`: the platform-admin client.
    pub async fn bootstrap(&self) -> (String, String) {
        let out = unicred::cli::bootstrap(&self.state).await.unwrap();
        (
            out["client_id"].as_str().unwrap().into(),
            out["client_secret"].as_str().unwrap().into(),
        )
    }

    pub async fn token(&self, tenant: &str, id: &str, secret: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        let r = self
            .http
            .post(format!("{}/t/{tenant}/token", self.url))
            .basic_auth(id, Some(secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// Redeems a sign-in API login ticket at `/token` for `scope`.
    pub async fn redeem_ticket(
        &self,
        tenant: &str,
        id: &str,
        secret: &str,
        ticket: &str,
        scope: &str,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/t/{tenant}/token", self.url))
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "urn:unicred:grant-type:login-ticket"),
                ("login_ticket", ticket),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_token(&self) -> String {
        let (id, secret) = self.bootstrap().await;
        let (status, body) = self.token("system", &id, &secret, &[]).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a tenant, returns its slug.
    pub async fn tenant(&self, admin: &str, slug: &str) -> String {
        let (s, b) = self
            .admin(
                reqwest::Method::POST,
                "/admin/v1/tenants",
                admin,
                Some(json!({"slug": slug, "name": slug})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        slug.to_string()
    }

    /// Creates a confidential client; returns (client_id, secret).
    pub async fn client(&self, admin: &str, tenant: &str, body: Value) -> (String, String) {
        let (s, b) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/tenants/{tenant}/clients"),
                admin,
                Some(body),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        (
            b["client_id"].as_str().unwrap().into(),
            b["client_secret"].as_str().unwrap_or_default().into(),
        )
    }

    pub async fn introspect(&self, tenant: &str, id: &str, secret: &str, token: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/t/{tenant}/introspect", self.url))
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

#[track_caller]
/// The claims of a JWT, unverified (the tests check what the server put in).
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

pub fn assert_problem(status: StatusCode, body: &Value, expected: u16, kind: &str) {
    assert_eq!(status.as_u16(), expected, "{body}");
    assert_eq!(body["type"], format!("urn:unicred:problem:{kind}"), "{body}");
}

impl Server {
    /// POST /t/{tenant}/authn as a client.
    pub async fn authn(
        &self,
        tenant: &str,
        id: &str,
        secret: &str,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/t/{tenant}/authn", self.url))
            .basic_auth(id, Some(secret))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Creates a user with a password; returns its id.
    pub async fn user(&self, admin: &str, tenant: &str, username: &str, password: &str) -> String {
        let (s, b) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/tenants/{tenant}/users"),
                admin,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().to_string()
    }

    /// The temporary password an admin sets for `username` (who must replace it at the next
    /// sign-in); returns it.
    pub async fn temporary_password(&self, admin: &str, tenant: &str, username: &str) -> &'static str {
        let temp = "provisional-harbour-lantern-7";
        let (_, users) = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/tenants/{tenant}/users?q={username}"),
                admin,
                None,
            )
            .await;
        let uid = users["items"][0]["id"].as_str().unwrap();
        let (st, b) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/tenants/{tenant}/users/{uid}/password"),
                admin,
                Some(json!({"password": temp, "temporary": true})),
            )
            .await;
        assert_eq!(st, 204, "{b}");
        temp
    }

    /// A client allowed to use the sign-in API and redeem its tickets.
    pub async fn authn_client(&self, admin: &str, tenant: &str) -> (String, String) {
        self.client(
            admin,
            tenant,
            json!({"name": "backend", "authn_api": true, "grant_types": ["urn:unicred:grant-type:login-ticket"], "scopes": ["accounts:read", "account"]}),
        )
        .await
    }
}
