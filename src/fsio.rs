//! The crate's file rules, in one place: bounded reads and writes that never follow a
//! symbolic link (issue 9 items 1 to 3).
//!
//! - **Bounded reads.** [`read`] stops at its limit whatever the file is: it reads at most
//!   `limit + 1` bytes through [`std::io::Read::take`] and never trusts the size the file system
//!   reports, so a pipe, a device such as `/dev/zero` or a file that grows while it is read is
//!   refused as [`FileError::TooLarge`] after `limit + 1` bytes, with the memory that costs
//!   and no more. Every input the crate and its frontends read goes through it: certificate
//!   files ([`MAX_CERTIFICATE_FILE_BYTES`]), key files ([`MAX_KEY_FILE_BYTES`]), small records
//!   such as a member's `staged.json` ([`MAX_RECORD_BYTES`]) and backup archives
//!   ([`crate::backup::MAX_ARCHIVE_BYTES`]).
//! - **No write through a symbolic link.** A member's files live under a root chosen by the
//!   administrator (the fleet's `--root`, or one member's state directory). Below that root,
//!   nothing is created, replaced, renamed or removed through a symbolic link: each directory
//!   on the way is checked with `symlink_metadata` (never followed) and created with
//!   `create_dir` (never `create_dir_all`); files are written to a temporary name opened with
//!   `create_new` (`O_CREAT | O_EXCL`, which refuses a symbolic link even when it dangles) and
//!   renamed over a final name that must not be a symbolic link. A symbolic link where a
//!   directory or a file is expected is refused as [`FileError::Symlink`], naming it.
//!   The root itself must not be a symbolic link either (the directories above it are the
//!   administrator's layout and are used as they are): a root that is a link is refused rather
//!   than resolved, so what the administrator named is what is written, and the error says to
//!   name the real directory instead.
//!
//!   These checks are made with path names (the standard library has no `openat`), so they
//!   stop a link planted before the command runs, the case of a shared or restored fleet
//!   directory; a process that can write the member's directory *while* the command runs can
//!   race them.
//! - **Temporary files a rerun removes.** A temporary file has a fixed name derived from the
//!   file it becomes (`<name>` + [`TEMP_SUFFIX`]), not a process id, so one left behind by a
//!   killed run is removed by the next write of the same file.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

/// The most a certificate file (a PEM, DER or PKCS#7 bundle) may hold: 16 MiB, the limit of
/// [`crate::cert::bundle`].
pub const MAX_CERTIFICATE_FILE_BYTES: u64 = crate::cert::bundle::MAX_INPUT_LEN as u64;

/// The most a private-key file (PKCS#8 or SEC 1, PEM or DER) may hold: 64 KiB. An RSA-4096
/// PKCS#8 key in PEM is about 3.3 KiB.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The most a small record the crate writes for itself (a member's `staged.json`) may hold:
/// 64 KiB.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The suffix of temporary files: `key.pem` is written as `key.pem.zonepki-tmp`, then renamed.
pub const TEMP_SUFFIX: &str = ".zonepki-tmp";

/// A file that could not be read or written by these rules. Each message names the path and
/// says what to do; none contains the file's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file holds more than `limit` bytes (or is endless: a device, a pipe, a growing
    /// file); only `limit + 1` bytes were read.
    #[error(
        "{path}: more than {limit} bytes, the most {what} may hold; name the intended file \
         (input from a device, a pipe or a growing file is read only up to this limit)",
        path = path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
        /// What the file was expected to hold ("a certificate file", ...).
        what: &'static str,
    },
    /// A symbolic link where a directory or a file is written.
    #[error(
        "{path} is a symbolic link where a {expected} is expected; files are never written \
         through a symbolic link: replace the link with a real {expected}",
        path = path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
        /// "directory" or "file".
        expected: &'static str,
    },
    /// The root of the files written (a fleet's root, a member's directory) is a symbolic link.
    #[error(
        "{path} is a symbolic link; name the directory it points to instead (the root of the \
         member files is never a link, so what is named is where files are written)",
        path = path.display()
    )]
    RootSymlink {
        /// The root.
        path: PathBuf,
    },
    /// Something other than a directory where one is expected.
    #[error(
        "{path} is not a directory; move it away so that the directory can be created",
        path = path.display()
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A directory where a file is expected.
    #[error("{path} is a directory; expected a file", path = path.display())]
    IsADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The operating system refused.
    #[error("cannot {action} {path}: {reason}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// "read", "create", ...
        action: &'static str,
        /// The kind of failure, for callers that act on it (e.g. a missing file).
        kind: io::ErrorKind,
        /// The operating system's message.
        reason: String,
    },
}

impl FileError {
    /// The file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { kind, .. } if *kind == io::ErrorKind::NotFound)
    }

    fn io(path: &Path, action: &'static str, e: io::Error) -> Self {
        FileError::Io {
            path: path.to_path_buf(),
            action,
            kind: e.kind(),
            reason: e.to_string(),
        }
    }
}

/// Reads the file at `path`, at most `limit` bytes of it; `what` names its contents in the
/// error ("a certificate file").
///
/// Reads at most `limit + 1` bytes whatever the file is, so an endless or growing input is
/// refused as [`FileError::TooLarge`] without being read whole.
pub fn read(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let file = fs::File::open(path).map_err(|e| FileError::io(path, "read", e))?;
    if file
        .metadata()
        .map_err(|e| FileError::io(path, "read", e))?
        .is_dir()
    {
        return Err(FileError::IsADirectory {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::io(path, "read", e))?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
            what,
        });
    }
    Ok(bytes)
}

/// [`read`], with a missing file as `None`.
pub fn read_if_exists(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Option<Vec<u8>>, FileError> {
    match read(path, limit, what) {
        Err(e) if e.is_not_found() => Ok(None),
        other => other.map(Some),
    }
}

/// Checks that `root` is a directory and not a symbolic link; when it does not exist, creates
/// it (and its parents, which are the administrator's) if `create`, and is fine otherwise.
pub(crate) fn check_root(root: &Path, create: bool) -> Result<(), FileError> {
    match fs::symlink_metadata(root) {
        Ok(m) if m.file_type().is_symlink() => Err(FileError::RootSymlink {
            path: root.to_path_buf(),
        }),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(FileError::NotADirectory {
            path: root.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(|e| FileError::io(root, "create", e))?;
            check_root(root, false)
        }
        Err(e) => Err(FileError::io(root, "read", e)),
    }
}

/// Makes sure `dir`, which lies below `root`, is a real directory, as is every directory
/// between them; creates the missing ones one by one. `root` itself is checked as by
/// [`check_root`], and created if missing.
pub(crate) fn ensure_dir(root: &Path, dir: &Path) -> Result<(), FileError> {
    check_root(root, true)?;
    let Ok(rel) = dir.strip_prefix(root) else {
        // Only ever called with paths built by joining names onto the root.
        return Err(FileError::NotADirectory {
            path: dir.to_path_buf(),
        });
    };
    let mut path = root.to_path_buf();
    for part in rel.components() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(m) => check_is_dir(&path, &m)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&path) {
                Ok(()) => {}
                // Created meanwhile: check what is there now.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let m =
                        fs::symlink_metadata(&path).map_err(|e| FileError::io(&path, "read", e))?;
                    check_is_dir(&path, &m)?;
                }
                Err(e) => return Err(FileError::io(&path, "create", e)),
            },
            Err(e) => return Err(FileError::io(&path, "read", e)),
        }
    }
    Ok(())
}

fn check_is_dir(path: &Path, m: &fs::Metadata) -> Result<(), FileError> {
    if m.file_type().is_symlink() {
        Err(FileError::Symlink {
            path: path.to_path_buf(),
            expected: "directory",
        })
    } else if m.is_dir() {
        Ok(())
    } else {
        Err(FileError::NotADirectory {
            path: path.to_path_buf(),
        })
    }
}

/// What is at `path`, without following a symbolic link: `None` when nothing is.
pub(crate) fn kind(path: &Path) -> Result<Option<fs::FileType>, FileError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m.file_type())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::io(path, "read", e)),
    }
}

/// Refuses a symbolic link at `path` (where a file is expected); nothing there is fine.
pub(crate) fn refuse_symlink(path: &Path, expected: &'static str) -> Result<(), FileError> {
    match kind(path)? {
        Some(t) if t.is_symlink() => Err(FileError::Symlink {
            path: path.to_path_buf(),
            expected,
        }),
        _ => Ok(()),
    }
}

/// The temporary name of `path`: `path` + [`TEMP_SUFFIX`].
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Removes the file at `path` if there is one (a symbolic link is removed as a link, never
/// followed).
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), FileError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FileError::io(path, "remove", e)),
        _ => Ok(()),
    }
}

/// Creates `path`'s temporary file, new, with mode 0600 when `secret` (readable by no one
/// else from the moment it exists). A temporary file a killed run left there is removed first;
/// a symbolic link there is refused.
fn create_temp(path: &Path, secret: bool) -> Result<(PathBuf, fs::File), FileError> {
    let tmp = temp_path(path);
    match kind(&tmp)? {
        Some(t) if t.is_symlink() => {
            return Err(FileError::Symlink {
                path: tmp,
                expected: "file",
            });
        }
        Some(t) if t.is_file() => remove_file_if_exists(&tmp)?,
        Some(_) => return Err(FileError::IsADirectory { path: tmp }),
        None => {}
    }
    let mut opts = fs::OpenOptions::new();
    // create_new: O_CREAT | O_EXCL, which fails on any existing name, a symbolic link included.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if secret {
            opts.mode(0o600);
        }
    }
    let _ = secret;
    let file = opts
        .open(&tmp)
        .map_err(|e| FileError::io(&tmp, "create", e))?;
    Ok((tmp, file))
}

/// Writes `data` to `path` through its temporary file and a rename, in a directory already
/// checked by [`ensure_dir`]. `secret` files get mode 0600 from the moment they exist. A
/// symbolic link at the final name or at the temporary name is refused.
pub(crate) fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<(), FileError> {
    refuse_symlink(path, "file")?;
    let (tmp, mut f) = create_temp(path, secret)?;
    let result = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| FileError::io(&tmp, "write", e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| FileError::io(path, "replace", e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes every temporary file (name ending in [`TEMP_SUFFIX`]) directly in `dir`, as a
/// killed run may have left them; a symbolic link with such a name is refused.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<(), FileError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FileError::io(dir, "read", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| FileError::io(dir, "read", e))?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            let t = entry
                .file_type()
                .map_err(|e| FileError::io(&entry.path(), "read", e))?;
            if t.is_symlink() {
                return Err(FileError::Symlink {
                    path: entry.path(),
                    expected: "file",
                });
            }
            if !t.is_dir() {
                remove_file_if_exists(&entry.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_stops_at_the_limit_of_an_endless_device() {
        // /dev/zero reports a size of 0 and never ends.
        let e = read(Path::new("/dev/zero"), 1024, "a test file").unwrap_err();
        assert_eq!(
            e,
            FileError::TooLarge {
                path: "/dev/zero".into(),
                limit: 1024,
                what: "a test file"
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("/dev/zero") && msg.contains("1024"), "{msg}");
    }

    #[test]
    fn read_takes_exactly_the_limit_and_refuses_one_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, [7u8; 100]).unwrap();
        assert_eq!(read(&p, 100, "x").unwrap().len(), 100);
        assert!(matches!(
            read(&p, 99, "x"),
            Err(FileError::TooLarge { limit: 99, .. })
        ));
        assert_eq!(read_if_exists(&dir.path().join("none"), 9, "x"), Ok(None));
        assert!(matches!(
            read(dir.path(), 9, "x"),
            Err(FileError::IsADirectory { .. })
        ));
    }

    #[test]
    fn read_stops_at_the_limit_of_an_endless_pipe() {
        // A FIFO whose writer never stops: only limit + 1 bytes are taken, then the reader
        // closes and the writer sees a broken pipe.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(writer_path)
                .unwrap();
            let block = [b'y'; 4096];
            let mut written: u64 = 0;
            // Bounded: at most 64 MiB, far beyond the limit; ends at the broken pipe.
            while written < 64 << 20 {
                match f.write(&block) {
                    Ok(n) => written += n as u64,
                    Err(_) => break,
                }
            }
            written
        });
        let e = read(&fifo, 1 << 20, "a test file").unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit, .. } if limit == 1 << 20));
        let written = writer.join().unwrap();
        assert!(written < 64 << 20, "the reader stopped early: {written}");
    }

    #[test]
    fn writes_refuse_symbolic_links_and_clean_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::create_dir(&root).unwrap();
        // A directory link below the root.
        std::os::unix::fs::symlink(&outside, root.join("m")).unwrap();
        let e = ensure_dir(&root, &root.join("m/sub")).unwrap_err();
        assert_eq!(
            e,
            FileError::Symlink {
                path: root.join("m"),
                expected: "directory"
            }
        );
        fs::remove_file(root.join("m")).unwrap();
        ensure_dir(&root, &root.join("m/sub")).unwrap();
        let target = root.join("m/sub/key.pem");
        // The final name.
        std::os::unix::fs::symlink(outside.join("key.pem"), &target).unwrap();
        assert!(matches!(
            write_atomic(&target, b"secret", true),
            Err(FileError::Symlink { path, .. }) if path == target
        ));
        fs::remove_file(&target).unwrap();
        // The temporary name.
        std::os::unix::fs::symlink(outside.join("tmp"), temp_path(&target)).unwrap();
        assert!(matches!(
            write_atomic(&target, b"secret", true),
            Err(FileError::Symlink { path, .. }) if path == temp_path(&target)
        ));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        fs::remove_file(temp_path(&target)).unwrap();
        // A stale temporary file, as a killed run leaves it, is replaced and gone after.
        fs::write(temp_path(&target), b"").unwrap();
        write_atomic(&target, b"secret", true).unwrap();
        assert!(!temp_path(&target).exists());
        assert_eq!(fs::read(&target).unwrap(), b"secret");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The root itself.
        let link_root = dir.path().join("link-root");
        std::os::unix::fs::symlink(&outside, &link_root).unwrap();
        assert!(matches!(
            ensure_dir(&link_root, &link_root.join("m")),
            Err(FileError::RootSymlink { path }) if path == link_root
        ));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
