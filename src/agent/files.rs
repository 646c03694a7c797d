//! A member's files on disk (ZONECTL.md "The fleet"):
//!
//! ```text
//! DIR/<name>/current/cert.pem      chain, leaf first
//! DIR/<name>/current/key.pem       PKCS#8, mode 0600
//! DIR/<name>/current/trust.pem     every anchor the member trusts now
//! DIR/<name>/pending/key.pem       a key waiting for its certificate (0600)
//! DIR/<name>/remint-repo/          A1: what is staged for activation
//!     server.cer  ca.cert  key.pem (0600)  trust.pem  staged.json
//! DIR/<name>/ca/key.pem, cert.pem  on the certificate server (0600 key)
//! DIR/<name>/ca/future-<n>.key.pem, .cert.pem    during a Remint CA (0600 key)
//! ```
//!
//! This is the agent's I/O adapter; the agent itself stays sans-IO. Files are written to a
//! temporary name and renamed into place. `current/` is switched as a whole (A2): the new
//! contents are written to `current.next/`, then `current` is renamed to `current.prev` and
//! `current.next` to `current`. A crash between the two renames is finished on the next load,
//! so a reader sees either the whole old or the whole new material, never a mix.
//!
//! Every read is bounded and no write follows a symbolic link ([`crate::fsio`]): the root, the
//! member's directory, `current/`, `current.next/`, `pending/`, `ca/`, `remint-repo/`, every
//! file written and every temporary file must be what it claims, not a link, or the save is
//! refused with [`crate::fsio::FileError::Symlink`] naming it. So nothing a member writes (its
//! private keys above all) lands outside its directory. Temporary files have fixed names
//! (`key.pem.zonepki-tmp`), and the next save removes any a killed run left behind.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Agent, AgentError, AgentParts, Staged};
use crate::cert::CertificateDer;
use crate::cert::bundle;
use crate::clock::Timestamp;
use crate::fsio::{self, FileError, MAX_CERTIFICATE_FILE_BYTES, MAX_KEY_FILE_BYTES};
use crate::key::PrivateKey;

/// The root under which each member has a directory named after it.
///
/// The root must not be a symbolic link (it is refused, not resolved: name the directory it
/// points to); the directories above it are used as they are.
#[derive(Debug, Clone)]
pub struct MemberDir {
    root: PathBuf,
    /// [`MemberDir::single`]: `root` is the member's own directory.
    single: bool,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[derive(Serialize, Deserialize)]
struct StagedMeta {
    op_id: u64,
    activation: Timestamp,
}

/// The subdirectories a save writes into (besides `current/`, switched as a whole).
const SUBDIRS: [&str; 3] = ["pending", "ca", "remint-repo"];

/// Refuses a symbolic link (or anything but a directory) where a directory may be; nothing
/// there is fine.
fn existing_dir(path: &Path) -> Result<bool, FileError> {
    match fsio::kind(path)? {
        None => Ok(false),
        Some(t) if t.is_symlink() => Err(FileError::Symlink {
            path: path.to_path_buf(),
            expected: "directory",
        }),
        Some(t) if t.is_dir() => Ok(true),
        Some(_) => Err(FileError::NotADirectory {
            path: path.to_path_buf(),
        }),
    }
}

/// Removes a scratch directory of ours (`current.next`, `current.prev`); a symbolic link there
/// is refused, never followed.
fn remove_scratch_dir(path: &Path) -> Result<(), AgentError> {
    if existing_dir(path)? {
        fs::remove_dir_all(path).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}

impl MemberDir {
    /// Members live under `root` (created on first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MemberDir {
            root: root.into(),
            single: false,
        }
    }

    /// One member's own directory, whatever its name: `dir/current/`, `dir/remint-repo/`, ...
    /// (a member on its own host: `zone-agent --state DIR`). `dir` must not be a symbolic
    /// link, as a root.
    pub fn single(dir: impl Into<PathBuf>) -> Self {
        MemberDir {
            root: dir.into(),
            single: true,
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/<name>`. Names are FQDNs or checked device names (no `/`, never `.` or `..`).
    /// (With [`MemberDir::single`]: the directory itself.)
    pub fn member(&self, name: &str) -> PathBuf {
        if self.single {
            return self.root.clone();
        }
        self.root.join(name)
    }

    /// Finishes a `current/` switch a crash interrupted, in a member directory already checked
    /// to be a real directory.
    fn settle(dir: &Path) -> Result<(), AgentError> {
        let cur = dir.join("current");
        let next = dir.join("current.next");
        let prev = dir.join("current.prev");
        if !existing_dir(&cur)? && existing_dir(&next)? {
            fs::rename(&next, &cur).map_err(|e| io_err(&cur, e))?;
        }
        for stale in [next, prev] {
            remove_scratch_dir(&stale)?;
        }
        Ok(())
    }

    /// Loads a member's agent; a member with no directory yet is a fresh agent.
    pub fn load(&self, name: &str) -> Result<Agent, AgentError> {
        let dir = self.member(name);
        // A load may finish a switch (renames, removals): the root and the member directory
        // must be real directories.
        fsio::check_root(&self.root, false)?;
        if existing_dir(&dir)? {
            Self::settle(&dir)?;
        }
        let repo = dir.join("remint-repo");
        let meta_path = repo.join("staged.json");
        let staged = match fsio::read_if_exists(&meta_path, fsio::MAX_RECORD_BYTES, "staged.json")?
        {
            Some(bytes) => {
                let meta: StagedMeta =
                    serde_json::from_slice(&bytes).map_err(|e| io_err(&meta_path, e))?;
                Some(Staged {
                    op_id: meta.op_id,
                    activation: meta.activation,
                    trust_after: read_certs(&repo.join("trust.pem"))?,
                    chain: read_certs(&repo.join("server.cer"))?,
                    key: read_key(&repo.join("key.pem"))?,
                })
            }
            None => None,
        };
        Ok(Agent::from_parts(AgentParts {
            name: name.to_string(),
            key: read_key(&dir.join("current/key.pem"))?,
            chain: read_certs(&dir.join("current/cert.pem"))?,
            trust: read_certs(&dir.join("current/trust.pem"))?,
            pending: read_key(&dir.join("pending/key.pem"))?,
            ca_key: read_key(&dir.join("ca/key.pem"))?,
            ca_cert: read_certs(&dir.join("ca/cert.pem"))?.into_iter().next(),
            future_cas: read_future_cas(&dir.join("ca"))?,
            manual: if staged.is_none() {
                read_manual(&repo)?
            } else {
                None
            },
            staged,
        }))
    }

    /// Writes a member's agent state; `current/` is switched atomically when it changed.
    ///
    /// Refuses, before writing anything, a root, member directory or subdirectory that is a
    /// symbolic link; refuses a file or temporary name that is one when it comes to write it.
    pub fn save(&self, agent: &Agent) -> Result<(), AgentError> {
        let dir = self.member(agent.name());
        fsio::ensure_dir(&self.root, &dir)?;
        for sub in SUBDIRS {
            fsio::ensure_dir(&self.root, &dir.join(sub))?;
        }
        existing_dir(&dir.join("current"))?;
        // Temporary files a killed run left behind (each write also replaces its own).
        for sub in SUBDIRS {
            fsio::remove_temp_files(&dir.join(sub))?;
        }
        self.save_current(&dir, agent)?;
        write_key(&dir.join("pending/key.pem"), agent.pending_key())?;
        write_key(&dir.join("ca/key.pem"), agent.ca_key())?;
        write_certs(
            &dir.join("ca/cert.pem"),
            agent
                .ca_certificate()
                .map(std::slice::from_ref)
                .unwrap_or(&[]),
        )?;
        write_future_cas(&dir.join("ca"), agent)?;
        let repo = dir.join("remint-repo");
        match agent.staged() {
            Some(st) => {
                // Staging consumed the administrator's manual-mode files (CE2): the key now
                // lives, 0600, as the staged key; the clear key.der and other server.<ext>
                // copies go.
                for f in super::MANUAL_CHAIN_FILES.iter().chain(&["key.der"]) {
                    if *f != "server.cer" {
                        fsio::remove_file_if_exists(&repo.join(f))?;
                    }
                }
                write_certs(&repo.join("server.cer"), &st.chain)?;
                // ca.cert: the future zone CA, the first of the anchors after activation.
                write_certs(
                    &repo.join("ca.cert"),
                    st.trust_after.get(..1).unwrap_or(&[]),
                )?;
                write_certs(&repo.join("trust.pem"), &st.trust_after)?;
                write_key(&repo.join("key.pem"), st.key.as_ref())?;
                let meta = StagedMeta {
                    op_id: st.op_id,
                    activation: st.activation,
                };
                let json = serde_json::to_vec(&meta).map_err(|e| io_err(&repo, e))?;
                fsio::write_atomic(&repo.join("staged.json"), &json, false)?;
            }
            // Remove what staging wrote, and only that: before staging, server.<ext> and
            // key.der in the repository are the administrator's (CE2 manual mode).
            None if fsio::kind(&repo.join("staged.json"))?.is_some() => {
                for f in [
                    "server.cer",
                    "ca.cert",
                    "trust.pem",
                    "key.pem",
                    "staged.json",
                ] {
                    fsio::remove_file_if_exists(&repo.join(f))?;
                }
            }
            None => {}
        }
        Ok(())
    }

    fn save_current(&self, dir: &Path, agent: &Agent) -> Result<(), AgentError> {
        let cur = dir.join("current");
        let key_pem = agent.key().map(|k| k.to_pkcs8_pem());
        let chain_pem = (!agent.chain().is_empty()).then(|| bundle::to_pem(agent.chain()));
        let trust_pem = (!agent.trust().is_empty()).then(|| bundle::to_pem(agent.trust()));
        // Unchanged: nothing to do (most saves, e.g. a device's trust refresh, change nothing).
        let same = |f: &str, want: Option<&[u8]>| match want {
            Some(w) => holds(&cur.join(f), w),
            None => matches!(fsio::kind(&cur.join(f)), Ok(None)),
        };
        let cur_exists = existing_dir(&cur)?;
        if cur_exists
            && same("key.pem", key_pem.as_ref().map(|k| k.as_bytes()))
            && same("cert.pem", chain_pem.as_deref().map(str::as_bytes))
            && same("trust.pem", trust_pem.as_deref().map(str::as_bytes))
        {
            return Ok(());
        }
        let next = dir.join("current.next");
        remove_scratch_dir(&next)?;
        fs::create_dir(&next).map_err(|e| io_err(&next, e))?;
        if let Some(k) = &key_pem {
            fsio::write_atomic(&next.join("key.pem"), k.as_bytes(), true)?;
        }
        if let Some(c) = &chain_pem {
            fsio::write_atomic(&next.join("cert.pem"), c.as_bytes(), false)?;
        }
        if let Some(t) = &trust_pem {
            fsio::write_atomic(&next.join("trust.pem"), t.as_bytes(), false)?;
        }
        sync_dir(&next)?;
        let prev = dir.join("current.prev");
        remove_scratch_dir(&prev)?;
        if cur_exists {
            fs::rename(&cur, &prev).map_err(|e| io_err(&cur, e))?;
        }
        fs::rename(&next, &cur).map_err(|e| io_err(&cur, e))?;
        sync_dir(dir)?;
        remove_scratch_dir(&prev)?;
        Ok(())
    }
}

/// `ca/future-<n>.key.pem` and `ca/future-<n>.cert.pem`, one pair per future CA.
fn read_future_cas(ca_dir: &Path) -> Result<Vec<(PrivateKey, CertificateDer)>, AgentError> {
    let mut out = Vec::new();
    for n in 0.. {
        let cert = read_certs(&ca_dir.join(format!("future-{n}.cert.pem")))?;
        let key = read_key(&ca_dir.join(format!("future-{n}.key.pem")))?;
        match (key, cert.into_iter().next()) {
            (Some(k), Some(c)) => out.push((k, c)),
            _ => break,
        }
    }
    Ok(out)
}

fn write_future_cas(ca_dir: &Path, agent: &Agent) -> Result<(), AgentError> {
    let mut n = 0;
    for (key, cert) in agent.future_cas() {
        write_key(&ca_dir.join(format!("future-{n}.key.pem")), Some(key))?;
        write_certs(
            &ca_dir.join(format!("future-{n}.cert.pem")),
            std::slice::from_ref(cert),
        )?;
        n += 1;
    }
    // Remove pairs beyond the current count (a promoted or discarded future CA).
    loop {
        let key = ca_dir.join(format!("future-{n}.key.pem"));
        let cert = ca_dir.join(format!("future-{n}.cert.pem"));
        if fsio::kind(&key)?.is_none() && fsio::kind(&cert)?.is_none() {
            return Ok(());
        }
        fsio::remove_file_if_exists(&key)?;
        fsio::remove_file_if_exists(&cert)?;
        n += 1;
    }
}

/// CE2 manual mode: the administrator's `server.<ext>` and `key.der`, if any is there.
fn read_manual(
    repo: &Path,
) -> Result<Option<Result<super::ManualMaterial, super::ManualError>>, AgentError> {
    let mut files = Vec::new();
    for name in super::MANUAL_CHAIN_FILES.iter() {
        if let Some(bytes) = fsio::read_if_exists(
            &repo.join(name),
            MAX_CERTIFICATE_FILE_BYTES,
            "a certificate file",
        )? {
            files.push((name.to_string(), bytes));
        }
    }
    if let Some(bytes) =
        fsio::read_if_exists(&repo.join("key.der"), MAX_KEY_FILE_BYTES, "a key file")?
    {
        files.push(("key.der".to_string(), bytes));
    }
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(super::read_manual_material(&files)))
}

fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(dir, e))?;
    let _ = dir;
    Ok(())
}

fn read_key(path: &Path) -> Result<Option<PrivateKey>, AgentError> {
    match fsio::read_if_exists(path, MAX_KEY_FILE_BYTES, "a key file")? {
        Some(bytes) => Ok(Some(
            PrivateKey::from_pkcs8(&bytes).map_err(|e| io_err(path, e))?,
        )),
        None => Ok(None),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer>, AgentError> {
    match fsio::read_if_exists(path, MAX_CERTIFICATE_FILE_BYTES, "a certificate file")? {
        Some(bytes) => Ok(bundle::read_certificates(&bytes)
            .map_err(|e| io_err(path, e))?
            .into_iter()
            .map(|c| c.der().clone())
            .collect()),
        None => Ok(Vec::new()),
    }
}

/// Whether the file at `path` holds exactly `want` (read bounded by `want`'s length).
fn holds(path: &Path, want: &[u8]) -> bool {
    fsio::read(path, want.len() as u64, "a member file").is_ok_and(|have| have == want)
}

fn write_key(path: &Path, key: Option<&PrivateKey>) -> Result<(), AgentError> {
    match key {
        Some(k) => {
            let pem = k.to_pkcs8_pem();
            // Unchanged keys are not rewritten.
            if holds(path, pem.as_bytes()) {
                return Ok(());
            }
            Ok(fsio::write_atomic(path, pem.as_bytes(), true)?)
        }
        None => Ok(fsio::remove_file_if_exists(path)?),
    }
}

fn write_certs(path: &Path, certs: &[CertificateDer]) -> Result<(), AgentError> {
    if certs.is_empty() {
        return Ok(fsio::remove_file_if_exists(path)?);
    }
    let pem = bundle::to_pem(certs);
    if holds(path, pem.as_bytes()) {
        return Ok(());
    }
    Ok(fsio::write_atomic(path, pem.as_bytes(), false)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_staged_record_is_refused_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let members = MemberDir::new(dir.path());
        members.save(&Agent::new("dev-1")).unwrap();
        let meta = dir.path().join("dev-1/remint-repo/staged.json");
        std::os::unix::fs::symlink("/dev/zero", &meta).unwrap();
        let e = members.load("dev-1").unwrap_err();
        assert_eq!(
            e,
            AgentError::File(FileError::TooLarge {
                path: meta,
                limit: fsio::MAX_RECORD_BYTES,
                what: "staged.json",
            })
        );
    }

    #[test]
    fn a_linked_member_directory_is_refused_on_load_and_save() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let root = dir.path().join("root");
        fs::create_dir_all(outside.join("current.prev")).unwrap();
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dev-1")).unwrap();
        let members = MemberDir::new(&root);
        let want = AgentError::File(FileError::Symlink {
            path: root.join("dev-1"),
            expected: "directory",
        });
        // Loading would otherwise finish a switch there (and remove current.prev).
        assert_eq!(members.load("dev-1").unwrap_err(), want);
        assert_eq!(members.save(&Agent::new("dev-1")).unwrap_err(), want);
        let left: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["current.prev"]);
    }
}
