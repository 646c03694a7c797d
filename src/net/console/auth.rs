//! The console's sign-in and sessions (W3): the administrator's password as an Argon2id hash,
//! server-side sessions with a random id and an expiry, a CSRF token per session, and a
//! per-peer limit on failed sign-ins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;
use zeroize::Zeroizing;

/// The shortest password accepted for the console.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The longest password file read (bounded read).
const MAX_PASSWORD_FILE: u64 = 4096;

/// Why the console's password could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The password file could not be read.
    #[error("cannot read the console password file {}: {reason}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The password file is larger than a password can be.
    #[error(
        "the console password file {} is larger than {MAX_PASSWORD_FILE} bytes: it should hold \
         one password on one line",
        file.display()
    )]
    TooLarge {
        /// The file.
        file: PathBuf,
    },
    /// The password is too short.
    #[error(
        "the console password has {chars} characters; choose one of at least \
         {MIN_PASSWORD_CHARS}"
    )]
    TooShort {
        /// How many characters it has.
        chars: usize,
    },
    /// Argon2id or the random generator failed.
    #[error("cannot hash the console password: {reason}")]
    Hash {
        /// Why.
        reason: String,
    },
}

/// The administrator's console password, kept only as an Argon2id hash with a random salt
/// (W3). Debug prints no part of it.
pub struct ConsolePassword {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl std::fmt::Debug for ConsolePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsolePassword(..)")
    }
}

fn argon2id() -> Argon2<'static> {
    // OWASP's first Argon2id setting: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, Some(32)).expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl ConsolePassword {
    /// Hashes `password` (at least [`MIN_PASSWORD_CHARS`] characters).
    pub fn new(password: &str) -> Result<Self, ConsoleError> {
        let chars = password.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(ConsoleError::TooShort { chars });
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| ConsoleError::Hash {
            reason: e.to_string(),
        })?;
        let mut hash = [0u8; 32];
        argon2id()
            .hash_password_into(password.as_bytes(), &salt, &mut hash)
            .map_err(|e| ConsoleError::Hash {
                reason: e.to_string(),
            })?;
        Ok(ConsolePassword { salt, hash })
    }

    /// Reads the password from `file`: its first line, without the line end.
    pub fn read(file: &Path) -> Result<Self, ConsoleError> {
        use std::io::Read as _;
        let read_err = |e: std::io::Error| ConsoleError::Read {
            file: file.to_path_buf(),
            reason: e.to_string(),
        };
        let f = std::fs::File::open(file).map_err(read_err)?;
        let mut text = Zeroizing::new(String::new());
        f.take(MAX_PASSWORD_FILE + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_PASSWORD_FILE {
            return Err(ConsoleError::TooLarge {
                file: file.to_path_buf(),
            });
        }
        let line = text.lines().next().unwrap_or("");
        Self::new(line)
    }

    /// Whether `attempt` is the password (Argon2id, then a constant-time comparison).
    pub fn verify(&self, attempt: &str) -> bool {
        let mut out = Zeroizing::new([0u8; 32]);
        if argon2id()
            .hash_password_into(attempt.as_bytes(), &self.salt, out.as_mut())
            .is_err()
        {
            return false;
        }
        constant_eq(out.as_ref(), &self.hash)
    }
}

/// Compares two byte strings in time that depends only on their length.
pub(crate) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random token of 32 bytes, base64url.
fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// A message shown once on the next page (Post/Redirect/Get).
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    /// A refusal (role=alert) or a confirmation (role=status).
    pub(crate) error: bool,
    /// The text, in the library's words.
    pub(crate) text: String,
}

struct Session {
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// What a valid session gives a request.
#[derive(Clone)]
pub(crate) struct SessionInfo {
    /// The session's key in the table (the digest of its id).
    key: [u8; 32],
    /// The session's CSRF token.
    pub(crate) csrf: String,
}

/// Failed sign-ins of one peer in the current window.
#[derive(Debug)]
struct Attempts {
    since: Instant,
    failed: u32,
}

/// Server-side sessions and the sign-in rate limit. Debug shows counts, no id or token.
pub(crate) struct Sessions {
    ttl: Duration,
    max_failures: u32,
    window: Duration,
    table: Mutex<HashMap<[u8; 32], Session>>,
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.table.lock().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("open", &open)
            .finish_non_exhaustive()
    }
}

/// The most sessions kept at once (the oldest expire first when more sign in).
const MAX_SESSIONS: usize = 1024;

fn session_key(id: &str) -> [u8; 32] {
    sha2::Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max_failures: u32, window: Duration) -> Self {
        Sessions {
            ttl,
            max_failures,
            window,
            table: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session: returns its id (for the cookie only; the table keeps its digest).
    pub(crate) fn open(&self) -> Result<String, getrandom::Error> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, s| s.expires > now);
        if t.len() >= MAX_SESSIONS
            && let Some(oldest) = t.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            t.remove(&oldest);
        }
        t.insert(
            session_key(&id),
            Session {
                csrf,
                expires: now + self.ttl,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The session of a cookie value, if it is open and not expired.
    pub(crate) fn get(&self, id: &str) -> Option<SessionInfo> {
        let key = session_key(id);
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(SessionInfo {
                key,
                csrf: s.csrf.clone(),
            }),
            Some(_) => {
                t.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Closes a session.
    pub(crate) fn close(&self, s: &SessionInfo) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(&s.key);
    }

    /// Leaves a message for the session's next page.
    pub(crate) fn set_flash(&self, s: &SessionInfo, flash: Flash) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = t.get_mut(&s.key) {
            entry.flash = Some(flash);
        }
    }

    /// Takes the session's message, if any.
    pub(crate) fn take_flash(&self, s: &SessionInfo) -> Option<Flash> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.get_mut(&s.key).and_then(|e| e.flash.take())
    }

    /// Whether `peer` may try to sign in now (fewer than the allowed failures in the window).
    pub(crate) fn may_try(&self, peer: IpAddr) -> bool {
        let now = Instant::now();
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        a.retain(|_, v| now.duration_since(v.since) < self.window);
        a.get(&peer).is_none_or(|v| v.failed < self.max_failures)
    }

    /// Counts a failed sign-in of `peer`.
    pub(crate) fn failed(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = a.entry(peer).or_insert(Attempts {
            since: now,
            failed: 0,
        });
        entry.failed += 1;
    }

    /// How long a peer that hit the limit waits, in whole seconds (for the message).
    pub(crate) fn window_secs(&self) -> u64 {
        self.window.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_verifies_only_itself() {
        let p = ConsolePassword::new("correct horse battery").unwrap();
        assert!(p.verify("correct horse battery"));
        assert!(!p.verify("correct horse batterY"));
        assert!(!p.verify(""));
        assert_eq!(format!("{p:?}"), "ConsolePassword(..)");
    }

    #[test]
    fn short_password_refused() {
        let e = ConsolePassword::new("short").unwrap_err();
        assert!(e.to_string().contains("at least 12"), "{e}");
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_secs(3600), 3, Duration::from_secs(60));
        let id = s.open().unwrap();
        let info = s.get(&id).expect("open session");
        assert!(s.get("not-a-session").is_none());
        s.close(&info);
        assert!(s.get(&id).is_none());
        let s = Sessions::new(Duration::ZERO, 3, Duration::from_secs(60));
        let id = s.open().unwrap();
        assert!(s.get(&id).is_none(), "a session past its expiry is refused");
    }

    #[test]
    fn sign_in_attempts_limited_per_peer() {
        let s = Sessions::new(Duration::from_secs(60), 3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(s.may_try(a));
            s.failed(a);
        }
        assert!(!s.may_try(a));
        assert!(s.may_try(b), "another peer is not limited");
    }
}
