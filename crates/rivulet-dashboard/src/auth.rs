//! The token, the sessions and their CSRF tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::Shared;
use crate::view::error_page;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "rivulet_session";

/// Sessions kept at most; the oldest goes when a new one would pass it.
const MAX_SESSIONS: usize = 1_000;

/// A random token of 32 bytes, hex-encoded (for `rivulet serve` without `--token`).
pub fn generate_token() -> String {
    random_hex()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Session id → (CSRF token, creation order).
type SessionMap = HashMap<String, (String, u64)>;

/// The logged-in sessions, with a counter for their creation order.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: Mutex<(u64, SessionMap)>,
}

impl Sessions {
    fn create(&self) -> (String, String) {
        let sid = random_hex();
        let csrf = random_hex();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (counter, map) = &mut *guard;
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        *counter += 1;
        map.insert(sid.clone(), (csrf.clone(), *counter));
        (sid, csrf)
    }

    fn csrf_of(&self, sid: &str) -> Option<String> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.get(sid).map(|v| v.0.clone())
    }

    fn remove(&self, sid: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.remove(sid);
    }
}

/// Who a request is: the CSRF token its forms must carry (none with a bearer token).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) csrf: Option<String>,
    pub(crate) sid: Option<String>,
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The field a form sends its CSRF token in.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// Authenticates every request behind it, and checks POSTs (read-only mode, CSRF).
pub(crate) async fn require(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = if let Some(t) = bearer {
        if !same(t.trim(), &s.config.token) {
            return error_page(&s, StatusCode::UNAUTHORIZED, "wrong token");
        }
        Caller {
            csrf: None,
            sid: None,
        }
    } else if let Some((sid, csrf)) = cookie(headers).and_then(|sid| {
        let csrf = s.sessions.csrf_of(&sid)?;
        Some((sid, csrf))
    }) {
        Caller {
            csrf: Some(csrf),
            sid: Some(sid),
        }
    } else if req.method() == Method::GET {
        return Redirect::to(&format!("{}/login", s.config.base_path)).into_response();
    } else {
        return error_page(&s, StatusCode::UNAUTHORIZED, "log in first");
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if req.method() != Method::POST {
            return error_page(&s, StatusCode::METHOD_NOT_ALLOWED, "only GET and POST");
        }
        let is_logout = req.uri().path().ends_with("/logout");
        if s.config.read_only && !is_logout {
            return error_page(&s, StatusCode::FORBIDDEN, "the dashboard is read-only");
        }
        if let Some(expected) = caller.csrf.clone() {
            // The body is a small form: read it, check the token, hand it on.
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, 1 << 20).await {
                Ok(b) => b,
                Err(_) => return error_page(&s, StatusCode::BAD_REQUEST, "body too large"),
            };
            let sent = form_urlencoded_value(&bytes, CSRF_FIELD);
            if !sent.is_some_and(|t| same(&t, &expected)) {
                return error_page(&s, StatusCode::FORBIDDEN, "missing or wrong CSRF token");
            }
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(caller);
            return next.run(req).await;
        }
    }
    let mut req = req;
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn form_urlencoded_value(body: &[u8], key: &str) -> Option<String> {
    crate::view::parse_form(body)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

pub(crate) async fn login_form(State(s): State<Shared>) -> Response {
    s.templates.render(
        &s,
        "login.html",
        minijinja::context! { error => "" },
        StatusCode::OK,
    )
}

pub(crate) async fn login(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let token = crate::view::parse_form(&body)
        .and_then(|p| p.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    if !token.is_some_and(|t| same(t.trim(), &s.config.token)) {
        return s.templates.render(
            &s,
            "login.html",
            minijinja::context! { error => "wrong token" },
            StatusCode::UNAUTHORIZED,
        );
    };
    let (sid, _csrf) = s.sessions.create();
    let path = if s.config.base_path.is_empty() {
        "/".to_owned()
    } else {
        s.config.base_path.clone()
    };
    let mut resp = Redirect::to(&format!("{}/", s.config.base_path)).into_response();
    if let Ok(v) = format!("{COOKIE}={sid}; Path={path}; HttpOnly; SameSite=Strict").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(crate) async fn logout(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if let Some(sid) = &caller.sid {
        s.sessions.remove(sid);
    }
    let mut resp = Redirect::to(&format!("{}/login", s.config.base_path)).into_response();
    if let Ok(v) = format!("{COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
