//! Templates, static assets, security headers and error pages.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment, Value};

use crate::State;

const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    (
        "overview_live.html",
        include_str!("../templates/overview_live.html"),
    ),
    ("topic.html", include_str!("../templates/topic.html")),
    (
        "topic_live.html",
        include_str!("../templates/topic_live.html"),
    ),
    (
        "queue_live.html",
        include_str!("../templates/queue_live.html"),
    ),
    (
        "dead_letters.html",
        include_str!("../templates/dead_letters.html"),
    ),
    ("queue.html", include_str!("../templates/queue.html")),
    ("job.html", include_str!("../templates/job.html")),
];

/// The compiled templates; every `.html` template escapes what it prints.
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub(crate) fn new() -> Templates {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // The templates ship in the binary; the tests render every one.
                tracing::error!("dashboard template {name} does not compile: {e}");
            }
        }
        Templates { env }
    }

    /// Renders `name` with `ctx` plus the common values (base path, read-only, CSRF).
    pub(crate) fn render_with(
        &self,
        state: &State,
        name: &str,
        ctx: Value,
        csrf: Option<&str>,
        status: StatusCode,
    ) -> Response {
        let common = minijinja::context! {
            base => state.config.base_path.as_str(),
            read_only => state.config.read_only,
            csrf => csrf.unwrap_or(""),
            poll_ms => u64::from(state.config.poll_seconds) * 1000,
            backend => state.admin.backend_name(),
        };
        let full = minijinja::context! { ..ctx, ..common };
        match self.env.get_template(name).and_then(|t| t.render(full)) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!("dashboard template {name}: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }

    pub(crate) fn render(
        &self,
        state: &State,
        name: &str,
        ctx: Value,
        status: StatusCode,
    ) -> Response {
        self.render_with(state, name, ctx, None, status)
    }
}

/// An HTML error page saying `message` (escaped).
pub(crate) fn error_page(state: &State, status: StatusCode, message: &str) -> Response {
    state.templates.render(
        state,
        "error.html",
        minijinja::context! { status => status.as_u16(), message => message },
        status,
    )
}

/// Decodes an `application/x-www-form-urlencoded` body into its pairs, in order.
pub(crate) fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    serde_urlencoded::from_bytes(body).ok()
}

pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

/// Security headers on every response.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
