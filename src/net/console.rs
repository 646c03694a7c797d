//! The web console (W1-W3): Configuration > Certificates, served by zoned under `/console`.
//!
//! Server-rendered HTML (module `html`: hand-written templates whose every interpolation goes
//! through one escaping function), one embedded stylesheet and one small script (no CDN; the
//! page works offline). Every action calls the same [`ZoneService`]
//! method `zonectl` calls, and a refusal is shown in the library's words.
//!
//! Security (W3):
//! - sign-in with the administrator's password, kept as an Argon2id hash
//!   ([`ConsolePassword`]); failed sign-ins are limited per peer address;
//! - server-side sessions with a random id, an expiry, and a cookie `Secure; HttpOnly;
//!   SameSite=Strict; Path=/console`;
//! - every state-changing request is a POST that must carry the session's CSRF token and an
//!   `Origin` naming this server (a cross-site form post, or one without a token, is refused
//!   and changes nothing);
//! - every answer has `Content-Security-Policy: default-src 'self'; frame-ancestors 'none'`
//!   (no inline script or style), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer`, and pages `Cache-Control: no-store`;
//! - a backup passphrase travels only in a POST body, is never logged, never put in a page or
//!   a URL.

pub mod auth;
mod html;

use std::net::IpAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

pub use auth::{ConsoleError, ConsolePassword};
use auth::{Flash, SessionInfo, Sessions};

use crate::backup::Passphrase;
use crate::ca::ValidityYears;
use crate::key::KeySpec;
use crate::ops::ActivationRequest;
use crate::service::{RemintCaRequest, ZoneService};
use crate::store::Storage;
use crate::transport::Transport;

/// The path the console lives under.
pub const PATH: &str = "/console";

/// The session cookie's name.
pub const COOKIE: &str = "zonepki_console";

/// The most bytes a console request body may have.
pub const MAX_BODY: usize = 64 * 1024;

/// Devices per page of the device table.
pub const DEVICES_PER_PAGE: usize = 50;

/// Audit entries shown.
pub const AUDIT_ENTRIES: usize = 20;

/// The console's state: the password, the sessions, the sign-in limit.
#[derive(Debug)]
pub struct Console {
    password: ConsolePassword,
    sessions: Sessions,
}

/// One request to the console, as zoned's HTTP layer read it (the body bounded by
/// [`MAX_BODY`]). Debug shows neither the body (a password, a passphrase) nor the headers
/// (the session cookie).
pub struct ConsoleRequest {
    /// GET or POST.
    pub method: Method,
    /// The path (starts with [`PATH`]).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The peer's address (the sign-in limit).
    pub peer: IpAddr,
}

impl std::fmt::Debug for ConsoleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("peer", &self.peer)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Static assets, embedded in the binary.
const APP_CSS: &str = include_str!("console/app.css");
const APP_JS: &str = include_str!("console/app.js");
const ICON: &str = include_str!("console/icon.svg");

impl Console {
    /// A console signing in with `password`: sessions last 8 hours, and a peer may fail to
    /// sign in 5 times a minute.
    pub fn new(password: ConsolePassword) -> Self {
        Console {
            password,
            sessions: Sessions::new(Duration::from_secs(8 * 3600), 5, Duration::from_secs(60)),
        }
    }

    /// The same, with a session lifetime and a sign-in limit of `max_failures` per `window`.
    pub fn with_limits(
        password: ConsolePassword,
        session_ttl: Duration,
        max_failures: u32,
        window: Duration,
    ) -> Self {
        Console {
            password,
            sessions: Sessions::new(session_ttl, max_failures, window),
        }
    }

    /// Answers one console request. Blocking (Argon2id, store reads): call it on a blocking
    /// thread.
    pub fn respond<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
    ) -> Response<Full<Bytes>> {
        let mut r = self.route(svc, req);
        secure_headers(r.headers_mut());
        r
    }

    fn session(&self, req: &ConsoleRequest) -> Option<SessionInfo> {
        cookie(&req.headers, COOKIE).and_then(|id| self.sessions.get(&id))
    }

    fn route<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
    ) -> Response<Full<Bytes>> {
        let sub = req.path.strip_prefix(PATH).unwrap_or("");
        match (&req.method, sub) {
            (&Method::GET, "/app.css") => asset("text/css; charset=utf-8", APP_CSS),
            (&Method::GET, "/app.js") => asset("text/javascript; charset=utf-8", APP_JS),
            (&Method::GET, "/icon.svg") => asset("image/svg+xml", ICON),
            (&Method::GET, "/signin") => page(StatusCode::OK, html::signin(None)),
            (&Method::POST, "/signin") => self.signin(req),
            (&Method::GET, "" | "/") => match self.session(req) {
                None => see_other("/console/signin"),
                Some(s) => {
                    let flash = self.sessions.take_flash(&s);
                    let q = Query::parse(req.query.as_deref().unwrap_or(""));
                    page(StatusCode::OK, html::main(svc, &s.csrf, flash.as_ref(), &q))
                }
            },
            (&Method::GET, "/ca.pem") => match self.session(req) {
                None => refused(StatusCode::UNAUTHORIZED, "sign in to the console first"),
                Some(_) => match svc.ca_certificate() {
                    Ok(c) => download(
                        "application/x-pem-file",
                        "zone-ca.pem",
                        c.der().to_pem().into_bytes(),
                    ),
                    Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                },
            },
            (&Method::POST, action) => self.action(svc, req, action),
            (&Method::GET, _) => refused(StatusCode::NOT_FOUND, "no such console page"),
            _ => refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "the console takes GET and POST only",
            ),
        }
    }

    fn signin(&self, req: &ConsoleRequest) -> Response<Full<Bytes>> {
        if let Err(why) = same_origin(&req.headers) {
            return refused(StatusCode::FORBIDDEN, &why);
        }
        if !self.sessions.may_try(req.peer) {
            return page(
                StatusCode::TOO_MANY_REQUESTS,
                html::signin(Some(&format!(
                    "Too many failed sign-ins from your address: wait {} seconds and try again.",
                    self.sessions.window_secs()
                ))),
            );
        }
        let form = Form::parse(&req.body);
        let password = form.secret("password").unwrap_or_default();
        if !self.password.verify(&password) {
            self.sessions.failed(req.peer);
            tracing::info!(peer = %req.peer, "console sign-in refused");
            return page(
                StatusCode::UNAUTHORIZED,
                html::signin(Some("The password is not the console's password.")),
            );
        }
        let id = match self.sessions.open() {
            Ok(id) => id,
            Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        tracing::info!(peer = %req.peer, "console sign-in");
        let mut r = see_other("/console");
        let cookie = format!(
            "{COOKIE}={id}; Path={PATH}; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
            self.sessions.ttl().as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }

    /// A state-changing request: a session, the same origin and the session's CSRF token,
    /// or nothing happens.
    fn action<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
        action: &str,
    ) -> Response<Full<Bytes>> {
        let Some(session) = self.session(req) else {
            return refused(StatusCode::UNAUTHORIZED, "sign in to the console first");
        };
        if let Err(why) = same_origin(&req.headers) {
            return refused(StatusCode::FORBIDDEN, &why);
        }
        let form = Form::parse(&req.body);
        let token = form.get("csrf").unwrap_or_default();
        if !auth::constant_eq(token.as_bytes(), session.csrf.as_bytes()) {
            return refused(
                StatusCode::FORBIDDEN,
                "the request does not carry this session's form token: reload the console page \
                 and try again",
            );
        }
        let outcome: Result<String, String> = match action {
            "/signout" => {
                self.sessions.close(&session);
                let mut r = see_other("/console/signin");
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{COOKIE}=; Path={PATH}; Max-Age=0; Secure; HttpOnly; SameSite=Strict"
                )) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                return r;
            }
            "/backup-ca" => return backup(svc, &form),
            "/remint-ca" => remint_ca(svc, &form),
            "/cancel" => svc
                .cancel()
                .map(|v| format!("{}: {}", v.kind.title(), v.state.name()))
                .map_err(|e| e.to_string()),
            "/assign-now" => svc
                .assign_now()
                .map(|v| format!("The system update \"{}\" is assigned.", v.update_name))
                .map_err(|e| e.to_string()),
            "/baseline" => svc
                .baseline(false)
                .map(|v| format!("{}: {}", v.kind.title(), v.state.name()))
                .map_err(|e| e.to_string()),
            _ => return refused(StatusCode::NOT_FOUND, "no such console action"),
        };
        let flash = match outcome {
            Ok(text) => Flash { error: false, text },
            Err(text) => Flash { error: true, text },
        };
        self.sessions.set_flash(&session, flash);
        see_other("/console")
    }
}

fn remint_ca<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    if form.get("confirm").as_deref() != Some("yes") {
        return Err("Confirm that you want to remint the certificate authority.".into());
    }
    let activation = match form.get("activation").as_deref().map(str::trim) {
        None | Some("") => return Err("Specify the certificate activation date.".into()),
        Some(a) => parse_activation(a)?,
    };
    let mut r = RemintCaRequest::new(activation);
    if let Some(cn) = form.get("common_name").filter(|c| !c.trim().is_empty()) {
        r = r.with_common_name(cn.trim());
    }
    if let Some(k) = form.get("key") {
        r = r.with_key(k.parse::<KeySpec>().map_err(|e| e.to_string())?);
    }
    if let Some(y) = form.get("validity") {
        let years: u32 = y
            .trim()
            .parse()
            .map_err(|_| format!("Valid for (years): \"{y}\" is not a number from 1 to 10."))?;
        r = r.with_validity(ValidityYears::try_from(years).map_err(|e| e.to_string())?);
    }
    r = r.with_include_dns(form.get("include_dns").as_deref() == Some("on"));
    let v = svc.start_remint_ca(r).map_err(|e| e.to_string())?;
    Ok(format!(
        "The Remint CA operation has been initiated; activation {}.",
        v.activation
    ))
}

/// The dialog's activation: "immediate", an RFC 3339 time, or a `datetime-local` value
/// (`YYYY-MM-DDTHH:MM[:SS]`), read as UTC.
fn parse_activation(text: &str) -> Result<ActivationRequest, String> {
    if let Ok(a) = text.parse::<ActivationRequest>() {
        return Ok(a);
    }
    let with_zone = match text.len() {
        16 => format!("{text}:00Z"),
        _ => format!("{text}Z"),
    };
    with_zone
        .parse::<ActivationRequest>()
        .map_err(|e| e.to_string())
}

fn backup<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Response<Full<Bytes>> {
    let pass = form.secret("passphrase").unwrap_or_default();
    let again = form.secret("passphrase_again").unwrap_or_default();
    if !auth::constant_eq(pass.as_bytes(), again.as_bytes()) {
        return refused(
            StatusCode::BAD_REQUEST,
            "the two passphrases differ: type the same passphrase twice",
        );
    }
    let passphrase = match Passphrase::new(pass.as_str()) {
        Ok(p) => p,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match svc.backup_ca(&passphrase) {
        Ok(bytes) => download("application/octet-stream", "zone-ca-backup.bin", bytes),
        Err(e) => refused(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// The query of the main page: the device table's filter and page.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub(crate) status: Option<String>,
    pub(crate) after: Option<String>,
}

impl Query {
    fn parse(q: &str) -> Self {
        let f = Form::parse(q.as_bytes());
        Query {
            status: f.get("status").filter(|s| !s.is_empty()),
            after: f.get("after").filter(|s| !s.is_empty()),
        }
    }
}

/// An `application/x-www-form-urlencoded` body or query.
struct Form(Vec<(String, zeroize::Zeroizing<String>)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Form(
            body.split(|b| *b == b'&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let mut it = pair.splitn(2, |b| *b == b'=');
                    let k = url_decode(it.next().unwrap_or_default());
                    let v = url_decode(it.next().unwrap_or_default());
                    (k.to_string(), v)
                })
                .collect(),
        )
    }

    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<String> {
        self.secret(name).map(|v| v.to_string())
    }

    /// The first value of `name`, wiped when dropped (a passphrase, a password).
    fn secret(&self, name: &str) -> Option<zeroize::Zeroizing<String>> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Percent-decoding with `+` as a space; invalid UTF-8 is replaced.
fn url_decode(s: &[u8]) -> zeroize::Zeroizing<String> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(s.len()));
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(s[i + 1]), hex(s[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    zeroize::Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A state-changing request must come from a page of this server: its `Origin` is
/// `https://<Host>`, or, where the browser withholds the origin (`Origin: null` under
/// `Referrer-Policy: no-referrer`), it says `Sec-Fetch-Site: same-origin` (a header a page
/// cannot set). The CSRF token is checked as well.
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("the request names no Host")?;
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(o) if o.eq_ignore_ascii_case(&format!("https://{host}")) => Ok(()),
        Some("null") | None if fetch_site == Some("same-origin") => Ok(()),
        Some(o) => Err(format!(
            "a request from another site ({}) cannot change the zone",
            o.chars().take(100).collect::<String>()
        )),
        None => Err("a request without an Origin cannot change the zone".into()),
    }
}

/// The security headers every console answer carries (W3).
fn secure_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
}

fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    r
}

fn download(
    content_type: &'static str,
    name: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

fn see_other(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn refused(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    page(status, html::refusal(status, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("zonepki_console=SESSIONID"),
        );
        let r = ConsoleRequest {
            method: Method::POST,
            path: "/console/backup-ca".into(),
            query: None,
            headers,
            body: Bytes::from_static(b"passphrase=SECRETPASS"),
            peer: IpAddr::from([127, 0, 0, 1]),
        };
        let d = format!("{r:?}");
        assert!(!d.contains("SECRETPASS") && !d.contains("SESSIONID"), "{d}");
    }

    #[test]
    fn form_decoding() {
        let f = Form::parse(b"a=1+2&b=%41%2f%&c=&d");
        assert_eq!(f.get("a").unwrap().as_str(), "1 2");
        assert_eq!(f.get("b").unwrap().as_str(), "A/%");
        assert_eq!(f.get("c").unwrap().as_str(), "");
        assert_eq!(f.get("d").unwrap().as_str(), "");
        assert!(f.get("e").is_none());
    }

    #[test]
    fn origin_must_be_this_server() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("zone.example:8443"));
        assert!(same_origin(&h).is_err(), "no Origin");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://zone.example:8443"),
        );
        assert!(same_origin(&h).is_err(), "plain http is another origin");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://zone.example:8443"),
        );
        assert!(same_origin(&h).is_ok());
    }

    #[test]
    fn activation_from_the_dialog_is_utc() {
        let a = parse_activation("2030-01-02T03:04").unwrap();
        assert_eq!(
            a,
            ActivationRequest::At("2030-01-02T03:04:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_activation("immediate").unwrap(),
            ActivationRequest::Immediate
        );
        assert!(parse_activation("tomorrow").is_err());
    }
}
