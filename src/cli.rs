//! The command line. Exit codes: 0 success, 2 bad usage or configuration, 1 runtime failure.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{AppState, serve, shutdown_signal};
use crate::config::{Config, LogFormat};
use crate::crypto::keyring::Kind;
use crate::store::{self, Db};
use crate::tenants::{self, Policy, SYSTEM};

#[derive(Parser)]
#[command(name = "unicred", version, about = "A hardened multi-tenant credential service")]
pub struct Cli {
    /// TOML configuration file (also UNICRED_CONFIG).
    #[arg(long, global = true, env = "UNICRED_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create the system tenant and platform-admin client once; issue that client a fresh secret.
    Bootstrap {
        #[arg(long)]
        json: bool,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Rotate keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Measure Argon2 on this machine.
    #[command(subcommand)]
    Hash(HashCmd),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chains offline against the database; exit 1 at the first broken one.
    Verify {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Sign a checkpoint of the tenant's chain head now.
    Checkpoint {
        #[arg(long)]
        tenant: String,
    },
    /// Delete the oldest events, up to the newest signed checkpoint before SEQ; the rest of the
    /// chain still verifies from that checkpoint.
    Prune {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        before: i64,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    Create {
        #[arg(long)]
        tenant: String,
        username: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Promote the tenant's published `next` signing keys.
    Rotate {
        #[arg(long)]
        tenant: String,
        /// Withdraw every key of the tenant now (current, retired and next; tokens they signed
        /// stop validating) and sign with fresh ones.
        #[arg(long)]
        emergency: bool,
    },
    /// New master key version; re-encrypts everything the master key protects.
    RotateMaster,
    /// New pepper version; old hashes move to it at their next successful login.
    RotatePepper,
}

#[derive(Subcommand)]
enum HashCmd {
    /// Print the strongest Argon2id parameters that meet a latency target.
    Calibrate {
        #[arg(long, default_value_t = 250)]
        target_ms: u64,
        #[arg(long, default_value_t = 256)]
        max_memory_mib: u32,
    },
    /// Median ms/hash and hashes/s at the given (default: configured) parameters.
    Bench {
        #[arg(long)]
        m_kib: Option<u32>,
        #[arg(long)]
        t: Option<u32>,
        #[arg(long)]
        p: Option<u32>,
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Runtime failure: printed as one line, exit 1.
type Failure = Box<dyn std::error::Error>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unicred: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    // Tasks woken from outside the runtime — by the Argon2 workers, sqlx's SQLite threads —
    // wait in the global queue, which a busy worker checks only every so many polls (adaptive
    // by default). Checking every 8th poll measured +12 % median audited token issuance over 8
    // alternating rounds each (docs/BENCHMARKS.md).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(8)
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unicred: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    match command {
        Command::Serve => {
            let listen = config.listen;
            let state = AppState::build(config).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            tracing::info!(listen = %listener.local_addr()?, "unicred serving");
            serve(listener, state, shutdown_signal()).await?;
        }
        Command::Migrate => {
            let db = Db::connect(&config.database_url(), 2).await?;
            db.migrate().await?;
            println!("migrations applied");
        }
        Command::Bootstrap { json } => {
            let state = AppState::build(config).await?;
            let out = bootstrap(&state).await?;
            if json {
                println!("{out}");
            } else {
                println!("Platform-admin client (the secret is shown once; the previous one no longer works):");
                for (k, v) in out.as_object().into_iter().flatten() {
                    println!("  {k}: {}", v.as_str().unwrap_or_default());
                }
            }
        }
        Command::Tenant(TenantCmd::Create { slug, name }) => {
            if slug == SYSTEM {
                return Err("the system tenant is created by `unicred bootstrap`".into());
            }
            let state = AppState::build(config).await?;
            let policy = Policy::default();
            let data = serde_json::json!({"slug": slug, "name": name.as_deref().unwrap_or(&slug), "policy": policy});
            let event = |id: &str| {
                crate::audit::Event::new(id, "tenant.created")
                    .actor("cli")
                    .data(data.clone())
            };
            let t = tenants::create(&state, &slug, name.as_deref(), policy, &event).await?;
            println!(
                "{}",
                serde_json::json!({"id": t.id, "slug": t.slug, "name": t.name, "issuer": state.config.issuer(&t.slug)})
            );
        }
        Command::User(UserCmd::Create {
            tenant,
            username,
            password_stdin,
        }) => {
            let state = AppState::build(config).await?;
            let t = state.tenants.by_slug(&tenant).await?.ok_or("no such tenant")?;
            let password = if password_stdin {
                let mut s = zeroize::Zeroizing::new(String::new());
                std::io::stdin().take(4096).read_to_string(&mut s)?;
                Some(zeroize::Zeroizing::new(
                    s.lines().next().unwrap_or_default().to_string(),
                ))
            } else {
                None
            };
            let input = crate::users::NewUser {
                username,
                email: None,
                display_name: None,
                password,
                temporary: false,
            };
            let u = crate::users::new_user(&state, &t, input).await?;
            u.insert(&state.db.pool).await?;
            let u = store::users::get(&state.db, &t.id, &u.id)
                .await?
                .ok_or("the user was not stored")?;
            println!("{}", serde_json::json!({"id": u.id, "username": u.username}));
        }
        Command::Keys(KeysCmd::Rotate { tenant, emergency }) => {
            let state = AppState::build(config).await?;
            let t = state.tenants.by_slug(&tenant).await?.ok_or("no such tenant")?;
            let e = crate::audit::Event::new(&t.id, "keys.rotated")
                .actor("cli")
                .data(serde_json::json!({"emergency": emergency}));
            state.keys.rotate(&t.id, emergency, &state.audit, e).await?;
            println!(
                "rotated signing keys of {}{}",
                t.slug,
                if emergency {
                    " (emergency: previous keys withdrawn)"
                } else {
                    ""
                }
            );
        }
        Command::Keys(KeysCmd::RotateMaster) => {
            let state = AppState::build(config).await?;
            let v = state.keyring.rotate(&state.db, Kind::Master).await?;
            println!("master key v{v}");
            let mut counts = serde_json::Map::new();
            for (what, n, by_version) in reencrypt_secrets(&state).await? {
                println!("re-encrypted {n} {what}");
                report(&format!("{what} by master version"), by_version);
                counts.insert(what.replace(' ', "_").to_lowercase(), n.into());
            }
            platform_event(
                &state,
                "keys.master_rotated",
                serde_json::json!({"version": v, "reencrypted": counts}),
            )
            .await?;
        }
        Command::Keys(KeysCmd::RotatePepper) => {
            let state = AppState::build(config).await?;
            let v = state.keyring.rotate(&state.db, Kind::Pepper).await?;
            platform_event(&state, "keys.pepper_rotated", serde_json::json!({"version": v})).await?;
            println!("pepper v{v}; hashes move to it at each user's next successful login");
            report(
                "password hashes by pepper version",
                store::users::count_by_pepper(&state.db).await?,
            );
        }
        Command::Audit(AuditCmd::Verify { tenant }) => {
            let db = Db::connect(&config.database_url(), 2).await?;
            // A verifier does not change what it checks: no migrations here.
            if !db.is_migrated().await.unwrap_or(false) {
                return Err("the database schema is not this version's: run `unicred migrate` first".into());
            }
            let report = crate::audit::verify_all(&db, tenant.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(b) = report.first_broken() {
                let name = b.slug.as_deref().unwrap_or(&b.tenant_id);
                return Err(format!(
                    "audit chain of {name} broken at sequence {}",
                    b.result.broken_at.unwrap_or(0)
                )
                .into());
            }
        }
        Command::Audit(AuditCmd::Checkpoint { tenant }) => {
            let state = AppState::build(config).await?;
            let t = state.tenants.by_slug(&tenant).await?.ok_or("no such tenant")?;
            let c = state.audit.checkpoint(&t.id).await?;
            println!("{}", serde_json::json!({"tenant": t.slug, "seq": c.seq, "kid": c.kid}));
        }
        Command::Audit(AuditCmd::Prune { tenant, before }) => {
            let state = AppState::build(config).await?;
            let t = state.tenants.by_slug(&tenant).await?.ok_or("no such tenant")?;
            let p = state.audit.prune(&t.id, before, "cli").await?;
            println!(
                "{}",
                serde_json::json!({"tenant": t.slug, "deleted": p.deleted, "chain_starts_after": p.base_seq})
            );
        }
        Command::Hash(cmd) => crate::password::bench::run(cmd_params(cmd, &config))?,
    }
    Ok(())
}

fn cmd_params(cmd: HashCmd, config: &Config) -> crate::password::bench::Command {
    use crate::password::bench::Command as B;
    match cmd {
        HashCmd::Calibrate {
            target_ms,
            max_memory_mib,
        } => B::Calibrate {
            target_ms,
            max_memory_mib,
        },
        HashCmd::Bench { m_kib, t, p, threads } => B::Bench {
            m_kib: m_kib.unwrap_or(config.argon2_m_kib),
            t: t.unwrap_or(config.argon2_t),
            p: p.unwrap_or(config.argon2_p),
            threads: threads.unwrap_or(config.hash_workers),
        },
    }
}

/// Records a platform-wide change in the system tenant's chain (once `bootstrap` made it).
async fn platform_event(state: &AppState, kind: &str, data: serde_json::Value) -> Result<(), Failure> {
    if let Some(t) = state.tenants.by_slug(crate::tenants::SYSTEM).await? {
        let e = crate::audit::Event::new(&t.id, kind).actor("cli").data(data);
        state.audit.record(e).await?;
    }
    Ok(())
}

fn report(what: &str, rows: Vec<(i64, i64)>) {
    let rows: Vec<String> = rows.iter().map(|(v, n)| format!("v{v}: {n}")).collect();
    println!(
        "{what}: {}",
        if rows.is_empty() {
            "none".into()
        } else {
            rows.join(", ")
        }
    );
}

/// After a master-key rotation: every secret encrypted under an older master version (signing
/// keys, audit checkpoint keys, TOTP seeds) re-encrypted under the current one. For each kind:
/// how many were re-encrypted, and how many are under each version now (an old version may be
/// removed from `keys/` once nothing is under it).
pub async fn reencrypt_secrets(state: &AppState) -> Result<Vec<(&'static str, u64, Vec<(i64, i64)>)>, Failure> {
    let signing = state.keys.reencrypt_all().await?;
    let audit = crate::audit::reencrypt_keys(&state.db, &state.keyring).await?;
    let seeds = crate::mfa::reencrypt_seeds(&state.db, &state.keyring).await?;
    Ok(vec![
        (
            "signing keys",
            signing as u64,
            store::keys::count_by_master_version(&state.db).await?,
        ),
        (
            "audit keys",
            audit,
            store::audit::count_keys_by_master_version(&state.db).await?,
        ),
        (
            "TOTP seeds",
            seeds,
            store::factors::count_seeds_by_master_version(&state.db).await?,
        ),
    ])
}

/// Ensures the system tenant and its platform-admin client; issues a fresh secret.
pub async fn bootstrap(state: &AppState) -> Result<serde_json::Value, Failure> {
    let system = match state.tenants.by_slug(SYSTEM).await? {
        Some(t) => (*t).clone(),
        None => {
            let event = |id: &str| {
                crate::audit::Event::new(id, "tenant.created")
                    .actor("cli:bootstrap")
                    .data(serde_json::json!({"slug": SYSTEM, "name": "Platform"}))
            };
            tenants::create(state, SYSTEM, Some("Platform"), Policy::default(), &event).await?
        }
    };
    let (client, new) = match store::clients::platform_admin(&state.db, &system.id).await? {
        Some(row) => (crate::clients::Client::try_from(row)?, false),
        None => {
            let input = crate::clients::ClientInput {
                name: Some("platform-admin".into()),
                grant_types: Some(vec![crate::clients::GRANT_CLIENT_CREDENTIALS.into()]),
                scopes: Some(vec![crate::clients::SCOPE_ADMIN.into()]),
                ..Default::default()
            };
            let (mut c, _) = crate::clients::new_client(state, &system, input, true)?;
            c.platform_admin = true;
            (c, true)
        }
    };
    // The client (if new), its secret and the event commit together.
    let (secret, tag, version) = crate::clients::rotated_secret(&state.keyring, &client)?;
    let mut tx = state.db.begin_write().await?;
    if new {
        store::clients::create(&mut *tx, &client.to_row()).await?;
    }
    store::clients::set_secret(&mut *tx, &client.id, Some(&tag), Some(version)).await?;
    let e = crate::audit::Event::new(&system.id, "client.secret_rotated")
        .actor("cli:bootstrap")
        .client(&client.id);
    state.audit.commit(tx, e).await?;
    state.clients.forget(&client.id);
    let issuer = state.config.issuer(SYSTEM);
    Ok(serde_json::json!({
        "client_id": client.id,
        "client_secret": secret,
        "token_endpoint": format!("{issuer}/token"),
        "issuer": issuer,
    }))
}
