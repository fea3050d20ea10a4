//! Every path unicred serves, in one place.

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::routing::{get, post};
use axum::{Router, middleware};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::{metrics, ops, ratelimit};
use crate::oidc;
use crate::{account, admin};

#[derive(OpenApi)]
#[openapi(
    info(title = "unicred management API", description = "Tenants, users, clients and signing keys. \
        Authenticate with a client_credentials access token (scope `admin` from the `system` tenant, \
        or `tenant-admin` for one tenant)."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The management API's routes and its OpenAPI document, from the same declarations.
pub fn admin_api(import_max_body_bytes: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    // The import endpoint takes larger bodies than everything else.
    let import = OpenApiRouter::new()
        .routes(routes!(admin::users::import))
        .layer(DefaultBodyLimit::max(import_max_body_bytes));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(admin::tenants::create, admin::tenants::list))
        .routes(routes!(
            admin::tenants::get,
            admin::tenants::update,
            admin::tenants::delete
        ))
        .routes(routes!(admin::users::create, admin::users::list))
        .routes(routes!(admin::users::get, admin::users::update, admin::users::delete))
        .routes(routes!(admin::users::set_password))
        .routes(routes!(admin::users::lock))
        .routes(routes!(admin::users::unlock))
        .routes(routes!(admin::users::throttle))
        .routes(routes!(admin::users::factors))
        .routes(routes!(admin::users::factor_delete))
        .routes(routes!(admin::users::sessions, admin::users::sessions_delete))
        .merge(import)
        .routes(routes!(admin::clients::create, admin::clients::list))
        .routes(routes!(
            admin::clients::get,
            admin::clients::update,
            admin::clients::delete
        ))
        .routes(routes!(admin::clients::rotate_secret))
        .routes(routes!(admin::keys::list))
        .routes(routes!(admin::keys::rotate))
        .routes(routes!(admin::audit::list))
        .routes(routes!(admin::audit::export))
        .routes(routes!(admin::audit::verify))
        .routes(routes!(admin::audit::checkpoint))
        .split_for_parts()
}

pub fn openapi_json() -> String {
    admin_api(1).1.to_pretty_json().expect("OpenAPI document serializes")
}

pub fn router(state: AppState) -> Router {
    let (admin, openapi) = admin_api(state.config.import_max_body_bytes);
    let openapi = openapi.to_pretty_json().expect("OpenAPI document serializes");
    // Credential endpoints sit behind the per-client-IP token bucket; /token, /revoke and
    // /userinfo answer the web origins the tenant's clients registered.
    let cross_origin = Router::new()
        .route("/token", post(oidc::token::token))
        .route("/revoke", post(oidc::revoke::revoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), ratelimit::per_ip))
        .route(
            "/userinfo",
            get(oidc::userinfo::userinfo).post(oidc::userinfo::userinfo),
        )
        .layer(middleware::from_fn_with_state(state.clone(), oidc::cors::cors));
    let credentials = Router::new()
        .route("/introspect", post(oidc::introspect::introspect))
        .route("/authn", post(oidc::authn::authn))
        .route("/authn/password", post(oidc::authn::new_password))
        .route("/authn/factors/webauthn/options", post(oidc::authn::webauthn::options))
        .route("/authn/factors/webauthn", post(oidc::authn::webauthn::factor))
        .route("/authn/factors/{kind}", post(oidc::authn::factor))
        .route("/authn/enroll/totp", post(oidc::authn::enroll_totp))
        .route("/authn/enroll/totp/confirm", post(oidc::authn::enroll_confirm))
        .route(
            "/authn/enroll/webauthn/options",
            post(oidc::authn::webauthn::enroll_options),
        )
        .route("/authn/enroll/webauthn", post(oidc::authn::webauthn::enroll))
        // Stores a login transaction for each signed-out request: bounded per IP like sign-ins.
        .route("/authorize", get(oidc::authorize::get).post(oidc::authorize::post))
        .route("/login", get(oidc::login::show).post(oidc::login::submit))
        .route("/login/mfa", post(oidc::login::mfa_submit))
        .route("/login/password", post(oidc::login::password_submit))
        .route("/login/webauthn/options", post(oidc::login::webauthn_options))
        .route("/login/webauthn", post(oidc::login::webauthn_submit))
        .route("/login/passkey/options", post(oidc::login::passkey_options))
        .route("/login/passkey", post(oidc::login::passkey_submit))
        .route("/login/enroll", post(oidc::login::enroll_submit))
        .route("/login/enroll/continue", post(oidc::login::enroll_continue))
        .route(
            "/login/enroll/webauthn/options",
            post(oidc::login::enroll_webauthn_options),
        )
        .route("/login/enroll/webauthn", post(oidc::login::enroll_webauthn))
        // Checks the current password like a sign-in.
        .route("/account/password", post(account::password))
        .route_layer(middleware::from_fn_with_state(state.clone(), ratelimit::per_ip));
    let tenant = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(oidc::discovery::openid_configuration),
        )
        .route("/jwks.json", get(oidc::discovery::jwks))
        .route("/audit-keys.json", get(admin::audit::audit_keys))
        .route(
            "/consent",
            get(oidc::login::consent_show).post(oidc::login::consent_submit),
        )
        .route("/logout", get(oidc::logout::get).post(oidc::logout::post))
        .route("/account/factors", get(account::factors))
        .route("/account/factors/{id}", axum::routing::delete(account::factor_delete))
        .route("/account/totp", post(account::totp_start))
        .route("/account/totp/{id}/confirm", post(account::totp_confirm))
        .route(
            "/account/webauthn/register/options",
            post(account::webauthn::register_options),
        )
        .route("/account/webauthn/register", post(account::webauthn::register))
        .route("/account/recovery-codes", post(account::recovery_codes))
        .route("/account/sessions", get(account::sessions))
        .route("/account/sessions/{id}", axum::routing::delete(account::session_delete))
        .route(
            "/account/consents/{client_id}",
            axum::routing::delete(account::consent_delete),
        )
        .merge(cross_origin)
        .merge(credentials);

    let request_id = HeaderName::from_static("x-request-id");
    let timeout = Duration::from_secs(state.config.request_timeout_seconds);
    Router::new()
        .nest("/t/{tenant}", tenant)
        .merge(admin)
        .route(
            "/admin/v1/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], openapi) }),
        )
        .route("/assets/unicred.css", get(oidc::pages::stylesheet))
        .route("/assets/webauthn.js", get(oidc::pages::webauthn_script))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { crate::http::Problem::not_found() })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(metrics::track))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(crate::http::error::retry_after_layer())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        // Spans name the method, the path (never the query: it can carry codes) and the request id.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_failure(
                    move |class: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                        // A 503 is shedding (full hashing queue, database outage: both logged where they are
                        // decided and counted in /metrics) or a timeout. One line per shed request would let
                        // a flood write the log at its own rate, so only timeouts are logged here.
                        match class {
                            ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE)
                                if latency < timeout => {}
                            ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
                                tracing::warn!(latency_ms = latency.as_millis() as u64, "request timed out")
                            }
                            class => {
                                tracing::error!(%class, latency_ms = latency.as_millis() as u64, "response failed")
                            }
                        }
                    },
                ),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
