//! A member's files on disk (ZONECTL.md "The fleet"): `DIR/<name>/current/cert.pem` (chain,
//! leaf first), `current/key.pem` (PKCS#8, mode 0600), `current/trust.pem` (every anchor the
//! member trusts), plus `pending/key.pem` while an enrolment waits for its certificate, and on
//! the certificate server `ca/key.pem` (0600) and `ca/cert.pem`. `remint-repo/` is created
//! for the staged operations (A1).
//!
//! This is the agent's I/O adapter; the agent itself stays sans-IO. Every file is written to a
//! temporary name and renamed into place, so a crash leaves either the old or the new file.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Agent, AgentError};
use crate::cert::CertificateDer;
use crate::cert::bundle;
use crate::key::PrivateKey;

/// The root under which each member has a directory named after it.
#[derive(Debug, Clone)]
pub struct MemberDir {
    root: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl MemberDir {
    /// Members live under `root` (created on first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MemberDir { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/<name>`. Names are FQDNs or checked device names (no `/`, never `.` or `..`).
    pub fn member(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Loads a member's agent; a member with no directory yet is a fresh agent.
    pub fn load(&self, name: &str) -> Result<Agent, AgentError> {
        let dir = self.member(name);
        let key = read_key(&dir.join("current/key.pem"))?;
        let chain = read_certs(&dir.join("current/cert.pem"))?;
        let trust = read_certs(&dir.join("current/trust.pem"))?;
        let pending = read_key(&dir.join("pending/key.pem"))?;
        let ca_key = read_key(&dir.join("ca/key.pem"))?;
        let ca_cert = read_certs(&dir.join("ca/cert.pem"))?.into_iter().next();
        Ok(Agent::from_parts(
            name.to_string(),
            key,
            chain,
            trust,
            pending,
            ca_key,
            ca_cert,
        ))
    }

    /// Writes a member's agent state.
    pub fn save(&self, agent: &Agent) -> Result<(), AgentError> {
        let dir = self.member(agent.name());
        for sub in ["current", "pending", "ca", "remint-repo"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        }
        write_key(&dir.join("current/key.pem"), agent.key())?;
        write_certs(&dir.join("current/cert.pem"), agent.chain())?;
        write_certs(&dir.join("current/trust.pem"), agent.trust())?;
        write_key(&dir.join("pending/key.pem"), agent.pending_key())?;
        write_key(&dir.join("ca/key.pem"), agent.ca_key())?;
        write_certs(
            &dir.join("ca/cert.pem"),
            agent
                .ca_certificate()
                .map(std::slice::from_ref)
                .unwrap_or(&[]),
        )?;
        Ok(())
    }
}

fn read_key(path: &Path) -> Result<Option<PrivateKey>, AgentError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(
            PrivateKey::from_pkcs8(&bytes).map_err(|e| io_err(path, e))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer>, AgentError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bundle::read_certificates(&bytes)
            .map_err(|e| io_err(path, e))?
            .into_iter()
            .map(|c| c.der().clone())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Writes `data` to `path` through a temporary file and a rename; `secret` files get mode
/// 0600 from the moment they exist (never readable by others, not even briefly).
fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(data).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn remove_if_exists(path: &Path) -> Result<(), AgentError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path, e)),
        _ => Ok(()),
    }
}

fn write_key(path: &Path, key: Option<&PrivateKey>) -> Result<(), AgentError> {
    match key {
        Some(k) => write_atomic(path, k.to_pkcs8_pem().as_bytes(), true),
        None => remove_if_exists(path),
    }
}

fn write_certs(path: &Path, certs: &[CertificateDer]) -> Result<(), AgentError> {
    if certs.is_empty() {
        return remove_if_exists(path);
    }
    write_atomic(path, bundle::to_pem(certs).as_bytes(), false)
}
