//! The rivulet web dashboard (O-DASH-1): an axum [`Router`] over the admin API
//! ([`rivulet::admin::Admin`]) that an application mounts under a path of its own, or
//! that `rivulet serve` runs.
//!
//! Server-rendered HTML (minijinja, auto-escaping every value), a small script and style
//! sheet served from the binary, no CDN and no build step. Safe by default: a token is
//! required (login form → `HttpOnly; SameSite=Strict` session cookie, or
//! `Authorization: Bearer`), every state-changing request is a POST carrying the
//! session's CSRF token, and a read-only mode refuses them all.
//!
//! ```no_run
//! # async fn f() {
//! use rivulet::{MemoryBackend, admin::Admin};
//! use rivulet_dashboard::{Config, router};
//!
//! let admin = Admin::new(MemoryBackend::new());
//! let app = axum::Router::new().nest("/rivulet", router(admin, Config::new("s3cret").base_path("/rivulet")));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

mod auth;
mod pages;
mod samples;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use rivulet::admin::Admin;

pub use crate::auth::generate_token;

/// How the dashboard runs.
#[derive(Clone)]
pub struct Config {
    token: String,
    read_only: bool,
    base_path: String,
    poll_seconds: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("token", &"<redacted>")
            .field("read_only", &self.read_only)
            .field("base_path", &self.base_path)
            .field("poll_seconds", &self.poll_seconds)
            .finish()
    }
}

impl Config {
    /// A dashboard that requires `token` to log in.
    pub fn new(token: impl Into<String>) -> Config {
        Config {
            token: token.into(),
            read_only: false,
            base_path: String::new(),
            poll_seconds: 5,
        }
    }

    /// No action buttons; every POST other than logging in is refused with 403.
    pub fn read_only(mut self, read_only: bool) -> Config {
        self.read_only = read_only;
        self
    }

    /// The path the router is mounted under (e.g. `/rivulet`), for the links it renders.
    pub fn base_path(mut self, path: &str) -> Config {
        self.base_path = path.trim_end_matches('/').to_owned();
        self
    }

    /// How often the pages poll for fresh data (2 to 60 seconds; default 5).
    pub fn poll_seconds(mut self, seconds: u32) -> Config {
        self.poll_seconds = seconds.clamp(2, 60);
        self
    }
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) admin: Admin,
    pub(crate) config: Config,
    pub(crate) sessions: auth::Sessions,
    pub(crate) templates: view::Templates,
    pub(crate) samples: samples::Samples,
}

pub(crate) type Shared = Arc<State>;

/// The dashboard's routes over `admin`. Mount it with [`Router::nest`] (and set
/// [`Config::base_path`] to the same path) or serve it as it is.
pub fn router(admin: Admin, config: Config) -> Router {
    let state = Arc::new(State {
        admin,
        config,
        sessions: auth::Sessions::default(),
        templates: view::Templates::new(),
        samples: samples::Samples::default(),
    });
    Router::new()
        .route("/", get(pages::overview))
        .route("/live/overview", get(pages::overview_live))
        .route("/topics/{topic}", get(pages::topic))
        .route("/live/topics/{topic}", get(pages::topic_live))
        .route("/live/queues/{queue}", get(pages::queue_live))
        .route("/topics/{topic}/dead-letters", get(pages::dead_letters))
        .route(
            "/topics/{topic}/dead-letters/replay",
            post(pages::replay_dead_letters),
        )
        .route(
            "/topics/{topic}/dead-letters/purge",
            post(pages::purge_dead_letters),
        )
        .route("/queues/{queue}", get(pages::queue))
        .route("/queues/{queue}/pause", post(pages::pause))
        .route("/queues/{queue}/resume", post(pages::resume))
        .route("/queues/{queue}/jobs/{id}", get(pages::job))
        .route(
            "/queues/{queue}/jobs/{id}/{action}",
            post(pages::job_action),
        )
        .route("/logout", post(auth::logout))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/static/app.js", get(view::script))
        .route("/static/app.css", get(view::style))
        .layer(axum::middleware::from_fn(view::security_headers))
        .with_state(state)
}
