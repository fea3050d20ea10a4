//! Server-rendered pages: templates (minijinja, auto-escaped) and the headers every page sends.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("layout.html", include_str!("../../templates/layout.html")),
            ("login.html", include_str!("../../templates/login.html")),
            ("consent.html", include_str!("../../templates/consent.html")),
            ("mfa.html", include_str!("../../templates/mfa.html")),
            ("enroll.html", include_str!("../../templates/enroll.html")),
            ("password.html", include_str!("../../templates/password.html")),
            (
                "recovery_codes.html",
                include_str!("../../templates/recovery_codes.html"),
            ),
            ("logout.html", include_str!("../../templates/logout.html")),
            ("error.html", include_str!("../../templates/error.html")),
        ] {
            env.add_template(name, src).expect("templates parse");
        }
        env
    })
}

/// Renders `name` with `ctx` into a page. `form_target` is where a form on the page may send
/// the browser after posting (the client's redirect URI), for the CSP's `form-action`.
pub fn page(status: StatusCode, name: &str, ctx: minijinja::Value, form_target: Option<&str>) -> Response {
    render(status, name, ctx, form_target, false)
}

/// A page that shows an inline `data:` image (the TOTP enrolment's QR code); every other
/// page's CSP keeps images to the origin.
pub fn page_with_data_images(
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
    form_target: Option<&str>,
) -> Response {
    render(status, name, ctx, form_target, true)
}

fn render(
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
    form_target: Option<&str>,
    data_images: bool,
) -> Response {
    let html = match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, template = name, "template failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let form_action = match form_target.and_then(origin_of) {
        Some(o) => format!("'self' {o}"),
        None => "'self'".into(),
    };
    let img_src = if data_images { "'self' data:" } else { "'self'" };
    let csp = format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src {img_src}; connect-src 'self'; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `scheme://host[:port]`, or `scheme:` for private-use schemes.
fn origin_of(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    match u.origin() {
        url::Origin::Tuple(..) => Some(u.origin().ascii_serialization()),
        url::Origin::Opaque(_) => Some(format!("{}:", u.scheme())),
    }
}

pub fn error_page(status: StatusCode, tenant_name: &str, message: &str) -> Response {
    page(status, "error.html", minijinja::context! { tenant_name, message }, None)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

pub async fn stylesheet() -> Response {
    asset(include_str!("../../assets/unicred.css"), "text/css; charset=utf-8")
}

/// The mfa page's script: a WebAuthn assertion through the page's own endpoints.
pub async fn webauthn_script() -> Response {
    asset(
        include_str!("../../assets/webauthn.js"),
        "text/javascript; charset=utf-8",
    )
}
