//! `rivulet serve` (O-DASH-1): the web dashboard over the admin API, with the Prometheus
//! `/metrics` endpoint fed by a metrics collector, on one listener.
//!
//! Safe by default: it binds to 127.0.0.1, requires a token (from `--token` or
//! `RIVULET_DASHBOARD_TOKEN`, or generated and printed at start), and `--read-only`
//! refuses every action.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use clap::Args;
use rivulet::admin::Admin;
use rivulet::metrics::{Collector, Prometheus};
use rivulet_dashboard::{Config, generate_token, router};

use crate::error::CliError;
use crate::ops::{Globals, backend};

/// `rivulet serve` flags.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on. Anything but a loopback address exposes the
    /// dashboard to the network: put it behind TLS.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// The token to log in with (at least 16 characters); generated and printed when
    /// not given.
    #[arg(
        long,
        env = "RIVULET_DASHBOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// No action buttons; every POST is refused with 403.
    #[arg(long)]
    read_only: bool,
    /// Seconds between the pages' live refreshes (2 to 60).
    #[arg(long, default_value_t = 5, value_name = "S")]
    poll: u32,
    /// Serve no `/metrics` endpoint (and run no collector).
    #[arg(long)]
    no_metrics: bool,
}

/// Runs the dashboard until interrupted.
pub(crate) async fn run(g: &Globals, args: ServeArgs) -> Result<ExitCode, CliError> {
    let token = match args.token {
        Some(t) if t.trim().len() < 16 => {
            return Err(CliError::usage(
                "the token must have at least 16 characters",
            ));
        }
        Some(t) => t.trim().to_owned(),
        None => {
            let t = generate_token();
            eprintln!("dashboard token (generated): {t}");
            t
        }
    };
    let url = g.redis.clone().unwrap_or_default();
    let backend = backend(g).await.map_err(|e| e.scrub(&url))?;
    let config = Config::new(token)
        .read_only(args.read_only)
        .poll_seconds(args.poll);
    let mut app = Router::new().merge(router(Admin::new(backend.clone()), config));
    let mut _collector = None;
    if !args.no_metrics {
        let prometheus = Prometheus::install()?;
        _collector = Some(Collector::new(backend).spawn()?);
        app = app.route(
            "/metrics",
            get(move || {
                let p = prometheus.clone();
                async move { p.render() }
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::runtime(format!("cannot read the listening address: {e}")))?;
    if !local.ip().is_loopback() {
        eprintln!("warning: listening on {local}, not a loopback address");
    }
    eprintln!(
        "rivulet dashboard on http://{local}/{}",
        if args.read_only { " (read-only)" } else { "" }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::runtime(format!("the server stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
