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
//!   a URL;
//! - a wrong password and a state-changing request refused for want of a session, of this
//!   server's `Origin` or of the CSRF token are audited (N3, [`Console::respond_audited`]).
//!
//! Uploads (Change CA's root or chain, Import Certificate, Restore CA's archive) are
//! `multipart/form-data` file inputs, read within [`MAX_BODY`]; the library decides a
//! certificate file's format by its content (CE1).

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
use crate::ops::{CsrFields, CsrMode};
use crate::service::{ChangeCaRequest, ChangeCaTarget, Refusal, RemintCaRequest, ZoneService};
use crate::store::Storage;
use crate::transport::Transport;
use crate::zone::Fqdn;

/// The path the console lives under.
pub const PATH: &str = "/console";

/// The session cookie's name.
pub const COOKIE: &str = "zonepki_console";

/// The most bytes a console request body may have: room for the largest upload, a CA
/// backup archive ([`crate::backup::MAX_ARCHIVE_BYTES`]) in a multipart body.
pub const MAX_BODY: usize = crate::backup::MAX_ARCHIVE_BYTES + 256 * 1024;

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
    /// thread. A refused sign-in or state-changing request is not audited here: see
    /// [`Self::respond_audited`].
    pub fn respond<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
    ) -> Response<Full<Bytes>> {
        self.respond_audited(svc, req).0
    }

    /// [`Self::respond`], and the refusal to audit when the request was a sign-in with a
    /// wrong password, or a state-changing request refused for want of a session, of this
    /// server's `Origin` or of the session's CSRF token (N3: every refusal is audited). The
    /// caller hands it to the rate-limited audit queue that records the agent API's
    /// refusals ([`ZoneService::record_refusal`]).
    pub fn respond_audited<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
    ) -> (Response<Full<Bytes>>, Option<Refusal>) {
        let (mut r, refusal) = match self.route(svc, req) {
            Ok(r) => (r, None),
            Err(Refused {
                status,
                why,
                audit,
                page: body,
            }) => {
                let refusal = audit.then(|| {
                    Refusal::new(
                        format!("console {}", req.path.chars().take(64).collect::<String>()),
                        why.clone(),
                    )
                    .peer(req.peer.to_string())
                });
                let r = match body {
                    Some(body) => page(status, body),
                    None => refused(status, &why),
                };
                (r, refusal)
            }
        };
        secure_headers(r.headers_mut());
        (r, refusal)
    }

    fn session(&self, req: &ConsoleRequest) -> Option<SessionInfo> {
        cookie(&req.headers, COOKIE).and_then(|id| self.sessions.get(&id))
    }

    /// The session of a download or partial: one, or a refusal (not audited: a GET changes
    /// nothing).
    fn viewer(&self, req: &ConsoleRequest) -> Result<SessionInfo, Refused> {
        self.session(req)
            .ok_or_else(|| Refused::new(StatusCode::UNAUTHORIZED, "sign in to the console first"))
    }

    fn route<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
    ) -> Result<Response<Full<Bytes>>, Refused> {
        let sub = req.path.strip_prefix(PATH).unwrap_or("");
        let q = Form::parse(req.query.as_deref().unwrap_or("").as_bytes());
        let unavailable = |e: crate::Error| Refused::new(StatusCode::CONFLICT, e.to_string());
        Ok(match (&req.method, sub) {
            (&Method::GET, "/app.css") => asset("text/css; charset=utf-8", APP_CSS),
            (&Method::GET, "/app.js") => asset("text/javascript; charset=utf-8", APP_JS),
            (&Method::GET, "/icon.svg") => asset("image/svg+xml", ICON),
            (&Method::GET, "/signin") => page(StatusCode::OK, html::signin(None)),
            (&Method::POST, "/signin") => self.signin(req)?,
            (&Method::GET, "" | "/") => match self.session(req) {
                None => see_other("/console/signin"),
                Some(s) => {
                    let flash = self.sessions.take_flash(&s);
                    let q = Query::parse(req.query.as_deref().unwrap_or(""));
                    page(StatusCode::OK, html::main(svc, &s.csrf, flash.as_ref(), &q))
                }
            },
            (&Method::GET, "/ca.pem") => {
                self.viewer(req)?;
                let c = svc.ca_certificate().map_err(unavailable)?;
                download(PEM, "zone-ca.pem", c.der().to_pem().into_bytes())
            }
            // W2's downloads: a server's current chain, its future chain (Options), its CSR,
            // every CSR in one zip (SR5).
            (&Method::GET, "/chain.pem") => {
                self.viewer(req)?;
                let fqdn = server_param(&q)?;
                let chain = svc.server_chain(&fqdn).map_err(unavailable)?;
                if chain.is_empty() {
                    return Err(Refused::new(
                        StatusCode::NOT_FOUND,
                        format!("{fqdn} has no certificate"),
                    ));
                }
                download(PEM, &format!("{fqdn}-chain.pem"), pem_chain(&chain))
            }
            (&Method::GET, "/future.pem") => {
                self.viewer(req)?;
                let fqdn = server_param(&q)?;
                match svc.future_chain(&fqdn).map_err(unavailable)? {
                    Some(chain) if !chain.is_empty() => {
                        download(PEM, &format!("{fqdn}-future.pem"), pem_chain(&chain))
                    }
                    _ => {
                        return Err(Refused::new(
                            StatusCode::NOT_FOUND,
                            format!("{fqdn} has no future certificate"),
                        ));
                    }
                }
            }
            (&Method::GET, "/csr.pem") => {
                self.viewer(req)?;
                let fqdn = server_param(&q)?;
                let csrs = svc.csrs(std::slice::from_ref(&fqdn)).map_err(unavailable)?;
                let pem: String = csrs.iter().map(|(_, c)| c.to_pem()).collect();
                download(PEM, &format!("{fqdn}.csr"), pem.into_bytes())
            }
            (&Method::GET, "/csrs.zip") => {
                self.viewer(req)?;
                let zip = svc.csr_zip(&[]).map_err(unavailable)?;
                download("application/zip", "csrs.zip", zip)
            }
            // B3: the plan for a chosen time.
            (&Method::GET, "/plan") => {
                self.viewer(req)?;
                let at = q.text("at").unwrap_or_default();
                page(StatusCode::OK, html::plan(svc, &at))
            }
            (&Method::POST, action) => self.action(svc, req, action)?,
            (&Method::GET, _) => {
                return Err(Refused::new(StatusCode::NOT_FOUND, "no such console page"));
            }
            _ => {
                return Err(Refused::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "the console takes GET and POST only",
                ));
            }
        })
    }

    fn signin(&self, req: &ConsoleRequest) -> Result<Response<Full<Bytes>>, Refused> {
        same_origin(&req.headers).map_err(|why| Refused::audited(StatusCode::FORBIDDEN, why))?;
        if !self.sessions.may_try(req.peer) {
            return Ok(page(
                StatusCode::TOO_MANY_REQUESTS,
                html::signin(Some(&format!(
                    "Too many failed sign-ins from your address: wait {} seconds and try again.",
                    self.sessions.window_secs()
                ))),
            ));
        }
        let form = Form::parse(&req.body);
        let password = form.secret("password").unwrap_or_default();
        if !self.password.verify(&password) {
            self.sessions.failed(req.peer);
            tracing::info!(peer = %req.peer, "console sign-in refused");
            let why = "The password is not the console's password.";
            return Err(Refused {
                page: Some(html::signin(Some(why))),
                ..Refused::audited(StatusCode::UNAUTHORIZED, why)
            });
        }
        let id = self
            .sessions
            .open()
            .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        tracing::info!(peer = %req.peer, "console sign-in");
        let mut r = see_other("/console");
        let cookie = format!(
            "{COOKIE}={id}; Path={PATH}; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
            self.sessions.ttl().as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok(r)
    }

    /// A state-changing request: a session, the same origin and the session's CSRF token,
    /// or nothing happens (and the refusal is audited).
    fn action<S: Storage, T: Transport, C: crate::clock::Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        req: &ConsoleRequest,
        action: &str,
    ) -> Result<Response<Full<Bytes>>, Refused> {
        let Some(session) = self.session(req) else {
            return Err(Refused::audited(
                StatusCode::UNAUTHORIZED,
                "sign in to the console first",
            ));
        };
        same_origin(&req.headers).map_err(|why| Refused::audited(StatusCode::FORBIDDEN, why))?;
        let form =
            Form::from_request(req).map_err(|why| Refused::new(StatusCode::BAD_REQUEST, why))?;
        let token = form.get("csrf").unwrap_or_default();
        if !auth::constant_eq(token.as_bytes(), session.csrf.as_bytes()) {
            return Err(Refused::audited(
                StatusCode::FORBIDDEN,
                "the request does not carry this session's form token: reload the console page \
                 and try again",
            ));
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
                return Ok(r);
            }
            "/backup-ca" => return backup(svc, &form),
            "/remint-ca" => remint_ca(svc, &form),
            "/change-ca" => change_ca(svc, &form),
            "/move-ca" => move_ca(svc, &form),
            "/restore-ca" => restore_ca(svc, &form),
            "/import-certificate" => import_certificate(svc, &form),
            "/generate-csr" => generate_csr(svc, &form),
            "/remint-certificate" => remint_certificate(svc, &form),
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
            _ => {
                return Err(Refused::new(
                    StatusCode::NOT_FOUND,
                    "no such console action",
                ));
            }
        };
        let flash = match outcome {
            Ok(text) => Flash { error: false, text },
            Err(text) => Flash { error: true, text },
        };
        self.sessions.set_flash(&session, flash);
        Ok(see_other("/console"))
    }
}

/// A refused console request: its status, why (shown on the refusal page), and whether it
/// is audited (N3).
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    why: String,
    audit: bool,
    /// The page to answer with, when not the refusal page.
    page: Option<String>,
}

impl Refused {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Refused {
            status,
            why: why.into(),
            audit: false,
            page: None,
        }
    }

    fn audited(status: StatusCode, why: impl Into<String>) -> Self {
        Refused {
            status,
            why: why.into(),
            audit: true,
            page: None,
        }
    }
}

const PEM: &str = "application/x-pem-file";

/// The `server` query parameter of a download.
fn server_param(q: &Form) -> Result<Fqdn, Refused> {
    q.text("server")
        .ok_or_else(|| Refused::new(StatusCode::BAD_REQUEST, "name a server"))?
        .parse::<Fqdn>()
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, e.to_string()))
}

fn pem_chain(chain: &[crate::cert::CertificateDer]) -> Vec<u8> {
    chain
        .iter()
        .map(|c| c.to_pem())
        .collect::<String>()
        .into_bytes()
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

/// A time from a form: RFC 3339, or a `datetime-local` value read as UTC (the plan's time).
pub(crate) fn parse_time(text: &str) -> Result<crate::clock::Timestamp, String> {
    match parse_activation(text.trim()) {
        Ok(ActivationRequest::At(t)) => Ok(t),
        Ok(ActivationRequest::Immediate) | Err(_) => Err(format!(
            "\"{}\" is not a time: give a date and time (UTC)",
            text.chars().take(40).collect::<String>()
        )),
    }
}

fn backup<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<Response<Full<Bytes>>, Refused> {
    let pass = form.secret("passphrase").unwrap_or_default();
    let again = form.secret("passphrase_again").unwrap_or_default();
    if !auth::constant_eq(pass.as_bytes(), again.as_bytes()) {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "the two passphrases differ: type the same passphrase twice",
        ));
    }
    let passphrase = Passphrase::new(pass.as_str())
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let bytes = svc
        .backup_ca(&passphrase)
        .map_err(|e| Refused::new(StatusCode::CONFLICT, e.to_string()))?;
    Ok(download("application/zip", "zone-ca-backup.zip", bytes))
}

/// W1 Change CA (CI1, CE1, CE2): to an internal CA on a Primary Server, or to an external CA
/// from its uploaded root or chain, with manual or automatic CSRs; `start_change_ca`, as
/// `zonectl ca change` calls it.
fn change_ca<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    if form.get("confirm").as_deref() != Some("yes") {
        return Err("Confirm that you want to change the certificate authority.".into());
    }
    let activation = activation(form)?;
    let to = match form.get("target").as_deref() {
        Some("internal") => {
            let server = form
                .text("server")
                .ok_or(
                    "Select the certificate server: the Primary Server that is to be the new CA.",
                )?
                .parse::<Fqdn>()
                .map_err(|e| e.to_string())?;
            ChangeCaTarget::Internal {
                server,
                common_name: form.text("subject"),
                key: key_field(form, "key")?,
                validity: validity_field(form)?,
            }
        }
        Some("external") => {
            let chain = form
                .bytes("chain")
                .filter(|c| !c.is_empty())
                .ok_or("Upload the trusted root certificate of the external CA, or the complete chain.")?
                .to_vec();
            let csr = match form.get("csr_mode").as_deref() {
                Some("manual") => CsrMode::Manual,
                Some("auto") => {
                    let fields = CsrFields {
                        organization: form.text("org"),
                        organizational_unit: form.text("ou"),
                        locality: form.text("locality"),
                        state: form.text("state"),
                        country: form.text("country"),
                    };
                    CsrMode::Auto {
                        fields,
                        key: key_field(form, "csr_key")?,
                    }
                }
                _ => return Err("Select how the CSR for each server is generated.".into()),
            };
            ChangeCaTarget::External { chain, csr }
        }
        _ => {
            return Err(
                "Select \"Change to internal certificate authority\" or \"Change to external \
                 certificate authority\"."
                    .into(),
            );
        }
    };
    let req = ChangeCaRequest::new(to, activation)
        .with_include_dns(form.get("include_dns").as_deref() == Some("on"));
    let v = svc.start_change_ca(req).map_err(|e| e.to_string())?;
    Ok(format!(
        "The Change CA operation has been initiated; activation {}.",
        v.activation
    ))
}

/// W1 Move CA Role (MV1).
fn move_ca<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    let to = form
        .text("server")
        .ok_or("Select the Primary Server that is to be the new CA.")?
        .parse::<Fqdn>()
        .map_err(|e| e.to_string())?;
    svc.move_ca(&to).map_err(|e| e.to_string())?;
    Ok(format!("The CA role moved to {to}."))
}

/// W1 Restore CA (BK2): the uploaded archive, the passphrase it was made with, the target
/// Primary Server; `check_restore_ca`, then `restore_ca`, as `zonectl ca restore` calls them.
/// The passphrase came in the POST body and goes nowhere else.
fn restore_ca<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    let archive = form
        .bytes("archive")
        .filter(|a| !a.is_empty())
        .ok_or("Select the backup file to restore.")?;
    let to = form
        .text("server")
        .ok_or("Select the Primary Server to restore the CA onto.")?
        .parse::<Fqdn>()
        .map_err(|e| e.to_string())?;
    crate::backup::inspect(archive).map_err(|e| e.to_string())?;
    svc.check_restore_ca(&to).map_err(|e| e.to_string())?;
    let pass = form.secret("passphrase").unwrap_or_default();
    let passphrase = Passphrase::new(pass.as_str()).map_err(|e| e.to_string())?;
    let from = svc.ca_view().ok().and_then(|v| v.certificate_server);
    svc.restore_ca(archive, &passphrase, &to)
        .map_err(|e| e.to_string())?;
    Ok(match from {
        Some(from) if from != to.as_str() => {
            format!("CA restored on {to}; the CA role moved from {from} to {to}.")
        }
        _ => format!("CA restored on {to}, which holds the CA role."),
    })
}

/// W2 Import Certificate (SR5, CE3): the certificate the external CA issued for a server's
/// CSR, in any format the library reads (the content decides).
fn import_certificate<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    let fqdn = form
        .text("server")
        .ok_or("Select the server the certificate is for.")?
        .parse::<Fqdn>()
        .map_err(|e| e.to_string())?;
    let file = form
        .bytes("certificate")
        .filter(|c| !c.is_empty())
        .ok_or("Select the certificate file to import.")?;
    let chain = svc
        .import_certificate(&fqdn, file)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "Certificate imported for {fqdn} ({} certificate{} in its path to the zone CA).",
        chain.len(),
        if chain.len() == 1 { "" } else { "s" }
    ))
}

/// The servers ticked in a form's `servers` boxes; at least one, to `action` them.
fn selected_servers(form: &Form, action: &str) -> Result<Vec<Fqdn>, String> {
    let fqdns = form
        .all("servers")
        .iter()
        .map(|s| s.parse::<Fqdn>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if fqdns.is_empty() {
        return Err(format!("Select one or more servers to {action}."));
    }
    Ok(fqdns)
}

/// W2 Remint Certificate (SR1-SR3): a Server Remint of the selected servers, as `zonectl
/// server remint` starts it (`start_server_remint`); the library's rules decide (a common name
/// only for one server without satellites, the activation, an external CA's CSR mode).
fn remint_certificate<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    let fqdns = selected_servers(form, "remint")?;
    let name = form
        .text("update_name")
        .ok_or("Specify the system update's name.")?;
    let activation = match form.get("activation").as_deref().map(str::trim) {
        None | Some("") => return Err("Specify the certificate activation date.".into()),
        Some(a) => parse_activation(a)?,
    };
    let mut r = crate::service::ServerRemintRequest::new(fqdns, name, activation)
        .with_key(key_field(form, "key")?)
        .with_include_dns(form.get("include_dns").as_deref() == Some("on"));
    if let Some(cn) = form.text("common_name") {
        r = r.with_common_name(cn);
    }
    let v = svc.start_server_remint(r).map_err(|e| e.to_string())?;
    Ok(format!(
        "The Server Remint \"{}\" has been initiated; activation {}.",
        v.update_name, v.activation
    ))
}

/// W2 Generate CSR (SR5): for the selected servers, with the subject fields (a two-letter
/// country) and the key; a common name only for a single server (the library refuses one
/// for several). `generate_csr`, as `zonectl csr generate` calls it.
fn generate_csr<S: Storage, T: Transport, C: crate::clock::Clock>(
    svc: &ZoneService<S, T, C>,
    form: &Form,
) -> Result<String, String> {
    let fqdns = selected_servers(form, "generate a CSR for")?;
    let fields = CsrFields {
        organization: form.text("org"),
        organizational_unit: form.text("ou"),
        locality: form.text("locality"),
        state: form.text("state"),
        country: form.text("country"),
    };
    let made = svc
        .generate_csr(
            &fqdns,
            &fields,
            form.text("common_name"),
            key_field(form, "key")?,
        )
        .map_err(|e| e.to_string())?;
    Ok(made
        .iter()
        .map(|(f, c)| {
            let subject = crate::csr::VerifiedCsr::from_der(c.as_bytes())
                .map(|v| v.subject().to_string())
                .unwrap_or_default();
            format!("CSR generated for {f}: {subject}.")
        })
        .collect::<Vec<_>>()
        .join(" "))
}

fn key_field(form: &Form, name: &str) -> Result<KeySpec, String> {
    match form.text(name) {
        None => Ok(KeySpec::default()),
        Some(k) => k.parse::<KeySpec>().map_err(|e| e.to_string()),
    }
}

fn validity_field(form: &Form) -> Result<ValidityYears, String> {
    let y = form.text("validity").unwrap_or_else(|| "10".into());
    let years: u32 = y
        .parse()
        .map_err(|_| format!("Valid for (years): \"{y}\" is not a number from 1 to 10."))?;
    ValidityYears::try_from(years).map_err(|e| e.to_string())
}

/// The dialog's "Certificate activation date".
fn activation(form: &Form) -> Result<ActivationRequest, String> {
    match form.text("activation") {
        None => Err("Specify the certificate activation date.".into()),
        Some(a) => parse_activation(&a),
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

/// A form: an `application/x-www-form-urlencoded` body or query, or a `multipart/form-data`
/// body (the dialogs that upload a file: a certificate chain, a backup archive). Values are
/// bytes, wiped when dropped (a password, a passphrase, a CA backup).
struct Form(Vec<(String, zeroize::Zeroizing<Vec<u8>>)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Form(
            body.split(|b| *b == b'&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let mut it = pair.splitn(2, |b| *b == b'=');
                    let k = url_decode(it.next().unwrap_or_default());
                    let v = url_decode(it.next().unwrap_or_default());
                    (String::from_utf8_lossy(&k).into_owned(), v)
                })
                .collect(),
        )
    }

    /// The request's body as a form: multipart when its `Content-Type` says so, else
    /// URL-encoded. A multipart body that cannot be read is an error.
    fn from_request(req: &ConsoleRequest) -> Result<Self, String> {
        let content_type = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match multipart_boundary(content_type) {
            Some(boundary) => multipart(&req.body, &boundary).map(Form).ok_or_else(|| {
                "the form's multipart/form-data body is malformed: reload the console page and \
                 try again"
                    .to_string()
            }),
            None => Ok(Form::parse(&req.body)),
        }
    }

    /// The first value of `name`, as text (invalid UTF-8 replaced).
    fn get(&self, name: &str) -> Option<String> {
        self.bytes(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first value of `name` as text, wiped when dropped (a passphrase, a password).
    fn secret(&self, name: &str) -> Option<zeroize::Zeroizing<String>> {
        self.bytes(name)
            .map(|v| zeroize::Zeroizing::new(String::from_utf8_lossy(v).into_owned()))
    }

    /// The first value of `name`, as bytes (an uploaded file).
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Every non-empty value of `name`, trimmed (checkboxes sharing a name).
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The first non-empty value of `name`, trimmed.
    fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    parts
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The fields of a `multipart/form-data` body (RFC 7578): each part's name and content;
/// `None` when the body is not well formed. The body is bounded by [`MAX_BODY`].
fn multipart(body: &[u8], boundary: &str) -> Option<Vec<(String, zeroize::Zeroizing<Vec<u8>>)>> {
    let delimiter = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let name = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .and_then(|(_, v)| {
                v.split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(k, _)| *k == "name")
                    .map(|(_, n)| n.trim_matches('"').to_string())
            })?;
        let content = &rest[head_end + 4..];
        let end = find(content, next.as_bytes())?;
        out.push((name, zeroize::Zeroizing::new(content[..end].to_vec())));
        rest = &content[end + next.len()..];
    }
}

/// Percent-decoding with `+` as a space.
fn url_decode(s: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
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
    out
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

fn download(content_type: &'static str, name: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
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
    fn multipart_fields_and_files() {
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"abc\""),
            Some("abc".into())
        );
        assert_eq!(
            multipart_boundary("application/x-www-form-urlencoded"),
            None
        );
        let body = b"--abc\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nTOKEN\r\n\
            --abc\r\nContent-Disposition: form-data; name=\"chain\"; filename=\"a.der\"\r\n\
            Content-Type: application/octet-stream\r\n\r\n\x30\r\n--ab\x00\xff\r\n--abc--\r\n";
        let f = Form(multipart(body, "abc").unwrap());
        assert_eq!(f.get("csrf").unwrap(), "TOKEN");
        // A file's bytes are kept as they are, a CRLF and a near-boundary inside included.
        assert_eq!(f.bytes("chain").unwrap(), b"\x30\r\n--ab\x00\xff");
        // Truncated: no closing delimiter.
        assert!(multipart(&body[..body.len() - 12], "abc").is_none());
        assert!(multipart(b"no boundary here", "abc").is_none());
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
