//! unicred: a hardened multi-tenant credential service.
//!
//! `main.rs` only parses the command line; everything else lives here so the CLI, the tests
//! and the benches share one path.

pub mod account;
pub mod admin;
pub mod app;
pub mod audit;
pub mod authn;
pub mod cache;
pub mod cli;
pub mod clients;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod mfa;
pub mod oidc;
pub mod password;
pub mod store;
pub mod tenants;
pub mod tokens;
pub mod username;
pub mod users;

pub use app::{AppState, serve};
pub use config::Config;
