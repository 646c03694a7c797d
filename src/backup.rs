//! The encrypted CA backup archive (BK1, BK2, S5): bytes in, bytes out, no I/O.
//!
//! [`create`] turns the zone CA's certificate and key into a zip archive protected by a
//! [`Passphrase`]; [`open`] checks such an archive and gives the certificate and key back;
//! [`inspect`] reads what a restore would install without the passphrase, for a preview.
//! Where the bytes come from and go to (a file, an upload) is the frontend's business.
//!
//! # Format (version 1)
//!
//! A zip archive with exactly four entries, each stored uncompressed (the files are a few
//! KiB of text) under a plain name, never extracted to a file system: [`open`] reads them
//! by name from the in-memory bytes.
//!
//! - `manifest.json`:
//!   ```json
//!   {
//!     "format": "zonepki-ca-backup",
//!     "version": 1,
//!     "created_at": "2027-03-01T12:00:00Z",
//!     "ca_subject": "CN=Acme",
//!     "ca_sha256": "AB:CD:...",
//!     "entries": { "ca.pem": "<sha256 hex>", "ca-key.p8.pem": "<sha256 hex>" },
//!     "kdf": { "alg": "pbkdf2-hmac-sha256", "iterations": 600000, "salt": "<hex>" },
//!     "mac": "hmac-sha256",
//!     "mac_salt": "<hex>"
//!   }
//!   ```
//!   `ca_sha256` is the certificate's SHA-256 fingerprint in the form V1 shows (and
//!   `openssl x509 -fingerprint -sha256` prints); `entries` holds the lower-case hex SHA-256
//!   of the two other entries (what `sha256sum` prints). `kdf` repeats the key encryption's
//!   PBKDF2 parameters (they are also inside `ca-key.p8.pem`) so an administrator can read
//!   them without ASN.1 tools.
//! - `ca.pem`: the CA certificate, `-----BEGIN CERTIFICATE-----`.
//! - `ca-key.p8.pem`: the CA key as encrypted PKCS#8, `-----BEGIN ENCRYPTED PRIVATE KEY-----`:
//!   PBES2 with PBKDF2-HMAC-SHA256 ([`PBKDF2_ITERATIONS`] iterations, 16-byte random salt) and
//!   AES-256-CBC (16-byte random IV), as S5 requires. `openssl pkey -in ca-key.p8.pem -passin
//!   pass:...` decrypts it, so the key is recoverable without this crate. (scrypt is not used:
//!   OpenSSL's default memory cap refuses it at OWASP's N = 2^17.) The key is never in the
//!   archive in clear (BK1).
//! - `manifest.mac`: the lower-case hex HMAC-SHA256 of the exact bytes of `manifest.json`,
//!   then a newline. Its key is 32 bytes from PBKDF2-HMAC-SHA256 over the passphrase with
//!   the same iteration count and its own salt, `mac_salt`. Since the manifest holds the
//!   SHA-256 of every other entry, the MAC covers the whole archive (S5).
//!
//! # What [`open`] checks, in order
//!
//! 1. Sizes: the archive at most [`MAX_ARCHIVE_BYTES`], at most [`MAX_ENTRIES`] entries,
//!    each at most [`MAX_ENTRY_BYTES`] (so a hostile archive costs little memory).
//! 2. Zip structure: local and central headers agree, nothing hidden, nothing before the
//!    archive; names are plain (no `/`, `\`, `..`, drive or absolute paths), each one of the
//!    four above, none twice, none missing.
//! 3. The manifest: format, [`FORMAT_VERSION`], parameters within bounds (the iteration
//!    count is at least [`PBKDF2_ITERATIONS`] and at most [`MAX_PBKDF2_ITERATIONS`], so a
//!    forged manifest cannot make `open` spin).
//! 4. The MAC, in constant time. A wrong passphrase and an altered manifest both fail here,
//!    and nothing can tell the two apart: [`BackupError::WrongPassphrase`] says so.
//! 5. Each entry's SHA-256 against the (now authenticated) manifest.
//! 6. Decrypting the key; a failure after a good MAC means the archive is corrupt.
//! 7. The certificate parses, matches `ca_sha256`, and its public key is the key's.
//!
//! # One-time transfers (MV1)
//!
//! Moving the CA role between two agents ([`crate::service::ZoneService::move_ca`]) uses the
//! same archive with three differences: its `format` is [`TRANSFER_FORMAT`], its secret is a
//! [`TransferKey`] (256 random bits made for that one move, never shown, never stored) in
//! place of a passphrase, and its PBKDF2 runs [`TRANSFER_ITERATIONS`] iteration. Stretching
//! guards a guessable passphrase against offline guessing; a uniformly random 256-bit key
//! cannot be guessed, and one PBKDF2-HMAC-SHA256 iteration keyed by it is a PRF, as sound a
//! key derivation as 600,000. The floor follows the secret: [`open`] and [`inspect`] (a
//! passphrase) refuse a transfer archive and any count below [`PBKDF2_ITERATIONS`], and only
//! the crate-internal transfer path, whose key only [`TransferKey::generate`] makes, accepts
//! fewer. So no archive a user can restore is ever protected by fewer than
//! [`PBKDF2_ITERATIONS`] iterations, whatever a manifest claims (a changed `format` or
//! iteration count also breaks the MAC).
//!
//! Cost: [`create`] and [`open`] each run PBKDF2 twice (key encryption and MAC key), that is
//! 1.2 million HMAC-SHA256 iterations; that is the point of S5's iteration count. Measured
//! on a 2-core Xeon server in a release build: 0.16 to 0.23 s per `create` or `open` (idle
//! to loaded), 0.08 to 0.11 s for a wrong passphrase (it fails after the first run); an
//! unoptimised build is about 50 times slower. [`inspect`] runs no KDF (about 0.1 ms).

use std::fmt;
use std::io::{Cursor, Read, Write};
use std::ops::RangeInclusive;

use der::Decode;
use hmac::{Hmac, KeyInit, Mac};
use pkcs8::pkcs5::pbes2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cert::{CertError, Certificate, Fingerprint};
use crate::clock::Timestamp;
use crate::key::{KeyAlgorithm, KeyError, PrivateKey, Signer};

/// The shortest passphrase accepted, in characters (BK1).
pub const MIN_PASSPHRASE_CHARS: usize = 10;

/// PBKDF2-HMAC-SHA256 iterations for new archives: OWASP's figure for that PRF (S5).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// The most PBKDF2 iterations [`open`] and [`inspect`] accept: an archive from a later
/// version may use more than [`PBKDF2_ITERATIONS`], but a forged manifest must not be able to
/// make a restore run for minutes.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The `format` field of `manifest.json`.
pub const FORMAT: &str = "zonepki-ca-backup";

/// The `format` field of a one-time transfer archive of Move CA role (MV1): never a backup,
/// refused by [`open`] and [`inspect`].
pub const TRANSFER_FORMAT: &str = "zonepki-ca-transfer";

/// PBKDF2 iterations of a transfer archive: its secret is a random 256-bit [`TransferKey`],
/// which needs no stretching (see the module docs).
pub const TRANSFER_ITERATIONS: u32 = 1;

/// The `version` field of `manifest.json` this module writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// The largest archive [`open`] and [`inspect`] read (1 MiB; a real one is a few KiB).
pub const MAX_ARCHIVE_BYTES: usize = 1 << 20;

/// The largest entry, uncompressed (64 KiB; an RSA 4096 key in PEM is about 3.5 KiB).
pub const MAX_ENTRY_BYTES: u64 = 64 << 10;

/// The most entries a zip may list before it is refused without further reading.
pub const MAX_ENTRIES: usize = 8;

/// Name of the manifest entry.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Name of the entry holding the manifest's MAC.
pub const MAC_ENTRY: &str = "manifest.mac";
/// Name of the certificate entry.
pub const CERT_ENTRY: &str = "ca.pem";
/// Name of the encrypted key entry.
pub const KEY_ENTRY: &str = "ca-key.p8.pem";

/// Every entry of an archive, in the order [`create`] writes them.
const ENTRY_NAMES: [&str; 4] = [MANIFEST_ENTRY, MAC_ENTRY, CERT_ENTRY, KEY_ENTRY];

const KDF_ALG: &str = "pbkdf2-hmac-sha256";
const MAC_ALG: &str = "hmac-sha256";
const SALT_LEN: usize = 16;
/// Salts read from a manifest must be at least this long (RFC 8018 4.1 asks for 8 bytes).
const MIN_SALT_LEN: usize = 8;
/// ... and at most this long (the PKCS#5 implementation's own limit).
const MAX_SALT_LEN: usize = 64;
const KEY_PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";
const CERT_PEM_LABEL: &str = "CERTIFICATE";

/// Why a backup could not be made, or an archive could not be read or restored.
///
/// No message ever contains key or passphrase material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The passphrase is too short (BK1).
    #[error(
        "the passphrase is too short: use at least {min} characters (a few unrelated words \
         are easier to type and remember than symbols)"
    )]
    PassphraseTooShort {
        /// The minimum, in characters.
        min: usize,
    },
    /// The passphrase is only white space.
    #[error("the passphrase is only spaces or other white space: choose one with words in it")]
    PassphraseBlank,
    /// The two entries of the passphrase differ (BK1: typed twice).
    #[error("the two passphrases differ: type the same passphrase twice")]
    PassphraseMismatch,
    /// The MAC over the manifest does not verify (BK2).
    #[error(
        "wrong passphrase, or the archive was altered: its integrity check failed, and the two \
         cannot be told apart. Retry with the passphrase given when the backup was made; if it \
         is right, this copy is damaged or was tampered with: use another copy of the backup"
    )]
    WrongPassphrase,
    /// An entry does not match what the (authenticated) manifest says of it, or is damaged.
    #[error("the backup entry {entry} is damaged or was altered ({reason}): use another copy")]
    Tampered {
        /// The entry.
        entry: String,
        /// What did not match.
        reason: String,
    },
    /// The bytes are not a zip archive at all.
    #[error("this is not a zonepki CA backup (not a zip archive: {reason}); check the file")]
    NotAZip {
        /// Why.
        reason: String,
    },
    /// The bytes begin like a zip archive but its end is missing.
    #[error(
        "the backup archive is truncated ({reason}): it was probably cut off while being copied \
         or downloaded; use a complete copy"
    )]
    Truncated {
        /// Why.
        reason: String,
    },
    /// A zip archive whose structure is damaged or inconsistent.
    #[error("the backup archive's zip structure is damaged ({reason}): use another copy")]
    DamagedZip {
        /// Why.
        reason: String,
    },
    /// A required entry is absent.
    #[error("the backup archive has no {name} entry: it is incomplete or not a zonepki CA backup")]
    MissingEntry {
        /// The missing entry.
        name: &'static str,
    },
    /// An entry outside the format's four.
    #[error(
        "the backup archive holds an unexpected entry {name}: a zonepki CA backup holds only \
         manifest.json, manifest.mac, ca.pem and ca-key.p8.pem; refusing it"
    )]
    UnexpectedEntry {
        /// The entry's name, escaped.
        name: String,
    },
    /// An entry name that is a path (separators, `..`, absolute, drive letters, control
    /// characters).
    #[error(
        "the backup archive holds an entry named {name}, which is a path, not a plain file \
         name: refusing the archive"
    )]
    UnsafeEntryName {
        /// The entry's name, escaped.
        name: String,
    },
    /// An entry name listed more than once.
    #[error("the backup archive lists {name} more than once: refusing the ambiguous archive")]
    DuplicateEntry {
        /// The repeated name, escaped.
        name: String,
    },
    /// The archive, an entry, or the number of entries exceeds its limit.
    #[error("{what} is {size}, above the limit of {limit}: this is not a zonepki CA backup")]
    TooLarge {
        /// What was measured (`archive size in bytes`, `entries`, ...).
        what: String,
        /// What was found.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The key is not the certificate's key.
    #[error(
        "the CA key does not belong to the CA certificate: back up (or restore) a matching \
         certificate and key"
    )]
    KeyMismatch,
    /// The archive's CA has a key this build cannot use (RSA without the `rsa` feature).
    #[error("the backup's CA cannot be restored by this build: {0}")]
    UnsupportedKey(#[source] KeyError),
    /// `ca.pem` is not a usable certificate.
    #[error("the backup's ca.pem is not a usable certificate ({0}): use another copy")]
    BadCertificate(#[source] CertError),
    /// `ca-key.p8.pem` is not a key this crate can use, or not encrypted as S5 requires.
    #[error("the backup's CA key is not usable ({reason}): use another copy")]
    BadKey {
        /// Why (never any key material).
        reason: String,
    },
    /// `manifest.json` is malformed or describes something else.
    #[error("the backup's manifest.json is not valid ({reason}): use another copy")]
    BadManifest {
        /// Why.
        reason: String,
    },
    /// A format version this build does not read.
    #[error(
        "the backup has format version {found}; this build reads version {supported}: restore \
         it with a newer zonepki"
    )]
    UnsupportedVersion {
        /// The manifest's version.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
    /// Randomness or encryption failed while making a backup.
    #[error("cannot make the backup ({reason}): nothing was written; retry")]
    Crypto {
        /// Why.
        reason: String,
    },
}

/// A backup passphrase that satisfies BK1: at least [`MIN_PASSPHRASE_CHARS`] characters
/// (Unicode scalar values, not bytes) and not only white space. Zeroized on drop; `Debug`
/// shows nothing of it.
///
/// It is used exactly as given, as UTF-8 bytes: no trimming and no Unicode normalisation, so
/// `openssl pkey -passin pass:...` with the same text decrypts the key.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Checks `passphrase` against BK1's rules.
    pub fn new(passphrase: impl Into<String>) -> Result<Self, BackupError> {
        let passphrase = Zeroizing::new(passphrase.into());
        if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(BackupError::PassphraseTooShort {
                min: MIN_PASSPHRASE_CHARS,
            });
        }
        if passphrase.chars().all(char::is_whitespace) {
            return Err(BackupError::PassphraseBlank);
        }
        Ok(Passphrase(passphrase))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Serialised as its text (inside a server-to-server call, over mutual TLS); read back through
/// [`Passphrase::new`], so BK1's rules hold for it too.
impl serde::Serialize for Passphrase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Passphrase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(<String as serde::Deserialize>::deserialize(d)?);
        Passphrase::new(text.as_str()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([secret elided])")
    }
}

/// BK1's "typed twice": the passphrase when both entries are the same and it satisfies
/// [`Passphrase::new`]. A mismatch is reported first, since one of the two is then a typo.
pub fn confirm(first: &str, second: &str) -> Result<Passphrase, BackupError> {
    if first != second {
        return Err(BackupError::PassphraseMismatch);
    }
    Passphrase::new(first)
}

/// The secret of one Move CA role (MV1): 256 bits from the operating system's CSPRNG, made
/// only by [`TransferKey::generate`], so no user-chosen secret can ever protect an archive at
/// [`TRANSFER_ITERATIONS`]. Zeroized on drop; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct TransferKey(Zeroizing<[u8; 32]>);

impl TransferKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, BackupError> {
        Ok(TransferKey(Zeroizing::new(random()?)))
    }
}

/// Serialised as 64 hexadecimal digits (inside a server-to-server call, over mutual TLS).
impl serde::Serialize for TransferKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(base16ct::lower::encode_string(&self.0[..])))
    }
}

impl<'de> serde::Deserialize<'de> for TransferKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(<String as serde::Deserialize>::deserialize(d)?);
        let mut key = Zeroizing::new([0u8; 32]);
        match base16ct::mixed::decode(text.as_bytes(), &mut key[..]) {
            Ok(out) if out.len() == 32 => Ok(TransferKey(key)),
            _ => Err(serde::de::Error::custom(
                "a transfer key is 64 hexadecimal digits",
            )),
        }
    }
}

impl fmt::Debug for TransferKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransferKey([secret elided])")
    }
}

/// What an archive is for: its `format` and the iteration counts its secret calls for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A backup under a passphrase (BK1, S5).
    Backup,
    /// A one-time transfer under a [`TransferKey`] (MV1).
    Transfer,
}

impl Kind {
    fn format(self) -> &'static str {
        match self {
            Kind::Backup => FORMAT,
            Kind::Transfer => TRANSFER_FORMAT,
        }
    }
}

/// What [`open`] gives back: the CA certificate and key, checked to belong together.
#[non_exhaustive]
pub struct Restored {
    /// The CA certificate.
    pub certificate: Certificate,
    /// The CA key.
    pub key: PrivateKey,
    /// When the backup was made.
    pub created_at: Timestamp,
    /// The certificate's SHA-256 fingerprint (colon-separated upper-case hex, as V1 shows it),
    /// for comparing with the zone's current CA before the restore is applied.
    pub zone_ca_sha256: String,
}

impl fmt::Debug for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restored")
            .field("certificate", &self.certificate)
            .field("key", &"[secret key elided]")
            .field("created_at", &self.created_at)
            .field("zone_ca_sha256", &self.zone_ca_sha256)
            .finish()
    }
}

/// What [`inspect`] reads without the passphrase, for a restore preview (BK2).
///
/// Nothing here is authenticated: the archive is consistent with itself, but only [`open`]
/// (which checks the passphrase-keyed MAC) proves it is the backup that was made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackupInfo {
    /// The format version.
    pub version: u64,
    /// When the backup was made, according to the manifest.
    pub created_at: Timestamp,
    /// The CA certificate in the archive.
    pub certificate: Certificate,
    /// The certificate's subject.
    pub ca_subject: String,
    /// The certificate's SHA-256 fingerprint (colon-separated upper-case hex).
    pub ca_sha256: String,
    /// PBKDF2 iterations protecting the key and the MAC.
    pub kdf_iterations: u32,
}

/// Makes a backup archive of the zone CA (BK1): `ca_key` is encrypted under `passphrase` as
/// described in the module docs; `now` is recorded as the creation time.
///
/// Refuses a key that is not the certificate's ([`BackupError::KeyMismatch`]), since such a
/// backup could never be restored.
pub fn create(
    ca_cert: &Certificate,
    ca_key: &PrivateKey,
    passphrase: &Passphrase,
    now: Timestamp,
) -> Result<Vec<u8>, BackupError> {
    create_with(ca_cert, ca_key, passphrase, now, PBKDF2_ITERATIONS)
}

/// Checks `archive` and returns the CA certificate and key it holds (BK2); see the module
/// docs for the order of the checks. Pure: a failure changes nothing anywhere.
pub fn open(archive: &[u8], passphrase: &Passphrase) -> Result<Restored, BackupError> {
    open_with(
        archive,
        passphrase,
        PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS,
    )
}

/// Reads the manifest and certificate of `archive` without the passphrase, for a restore
/// preview. Every check of [`open`] that needs no passphrase is made (sizes, zip structure,
/// names, manifest, entry hashes, certificate, the key's encryption parameters); no KDF runs.
pub fn inspect(archive: &[u8]) -> Result<BackupInfo, BackupError> {
    let parsed = read_archive(
        archive,
        Kind::Backup,
        PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS,
    )?;
    let contents = check_contents(&parsed)?;
    Ok(BackupInfo {
        version: parsed.manifest.version,
        created_at: parsed.manifest.created_at,
        ca_subject: parsed.manifest.ca_subject.clone(),
        ca_sha256: parsed.manifest.ca_sha256.clone(),
        certificate: contents.certificate,
        kdf_iterations: parsed.manifest.kdf.iterations,
    })
}

/// [`create`] with a chosen iteration count (tests use a low one to stay fast).
pub(crate) fn create_with(
    ca_cert: &Certificate,
    ca_key: &PrivateKey,
    passphrase: &Passphrase,
    now: Timestamp,
    iterations: u32,
) -> Result<Vec<u8>, BackupError> {
    seal(
        ca_cert,
        ca_key,
        passphrase.as_bytes(),
        Kind::Backup,
        now,
        iterations,
    )
}

/// MV1: a one-time transfer archive of the CA under `key`, at [`TRANSFER_ITERATIONS`].
pub(crate) fn create_transfer(
    ca_cert: &Certificate,
    ca_key: &PrivateKey,
    key: &TransferKey,
    now: Timestamp,
) -> Result<Vec<u8>, BackupError> {
    seal(
        ca_cert,
        ca_key,
        key.0.as_slice(),
        Kind::Transfer,
        now,
        TRANSFER_ITERATIONS,
    )
}

/// MV1: opens a transfer archive made by [`create_transfer`] under `key`; refuses a backup.
/// Any count from [`TRANSFER_ITERATIONS`] up is accepted (the key is random, see the module
/// docs); the upper bound is [`open`]'s.
pub(crate) fn open_transfer(archive: &[u8], key: &TransferKey) -> Result<Restored, BackupError> {
    unseal(
        archive,
        key.0.as_slice(),
        Kind::Transfer,
        TRANSFER_ITERATIONS..=MAX_PBKDF2_ITERATIONS,
    )
}

/// Makes an archive of `kind` under `secret` (a passphrase's UTF-8 bytes or a transfer key).
fn seal(
    ca_cert: &Certificate,
    ca_key: &PrivateKey,
    secret: &[u8],
    kind: Kind,
    now: Timestamp,
    iterations: u32,
) -> Result<Vec<u8>, BackupError> {
    if &ca_key.public_key_info() != ca_cert.public_key() {
        return Err(BackupError::KeyMismatch);
    }
    let key_salt: [u8; SALT_LEN] = random()?;
    let iv: [u8; 16] = random()?;
    let mac_salt: [u8; SALT_LEN] = random()?;

    let key_pem = encrypt_key(ca_key, secret, iterations, &key_salt, iv)?;
    let cert_pem = ca_cert.der().to_pem();
    let manifest = Manifest {
        format: kind.format().to_string(),
        version: FORMAT_VERSION,
        created_at: now,
        ca_subject: ca_cert.subject(),
        ca_sha256: Fingerprint::sha256(ca_cert.der().as_bytes()).to_string(),
        entries: EntryHashes {
            ca_pem: sha256_hex(cert_pem.as_bytes()),
            ca_key: sha256_hex(key_pem.as_bytes()),
        },
        kdf: KdfParams {
            alg: KDF_ALG.to_string(),
            iterations,
            salt: hex(&key_salt),
        },
        mac: MAC_ALG.to_string(),
        mac_salt: hex(&mac_salt),
    };
    let mut manifest_json = serde_json::to_vec_pretty(&manifest).map_err(crypto_err)?;
    manifest_json.push(b'\n');
    let mac_key = derive_mac_key(secret, &mac_salt, iterations);
    let mut mac = new_mac(&mac_key)?;
    mac.update(&manifest_json);
    let mut mac_hex = hex(&mac.finalize().into_bytes());
    mac_hex.push('\n');

    write_zip(
        now,
        [
            (MANIFEST_ENTRY, manifest_json.as_slice()),
            (MAC_ENTRY, mac_hex.as_bytes()),
            (CERT_ENTRY, cert_pem.as_bytes()),
            (KEY_ENTRY, key_pem.as_bytes()),
        ],
    )
}

/// [`open`] accepting the iteration counts in `iterations` (tests use a low one).
pub(crate) fn open_with(
    archive: &[u8],
    passphrase: &Passphrase,
    iterations: RangeInclusive<u32>,
) -> Result<Restored, BackupError> {
    unseal(archive, passphrase.as_bytes(), Kind::Backup, iterations)
}

/// Opens an archive of `kind` under `secret`, accepting the iteration counts in `iterations`.
fn unseal(
    archive: &[u8],
    secret: &[u8],
    kind: Kind,
    iterations: RangeInclusive<u32>,
) -> Result<Restored, BackupError> {
    let parsed = read_archive(archive, kind, iterations)?;

    // The MAC first: nothing the archive says beyond the KDF parameters is used before it
    // verifies.
    let mac_key = derive_mac_key(secret, &parsed.mac_salt, parsed.manifest.kdf.iterations);
    let mut mac = new_mac(&mac_key)?;
    mac.update(&parsed.manifest_json);
    mac.verify_slice(&parsed.mac)
        .map_err(|_| BackupError::WrongPassphrase)?;

    let contents = check_contents(&parsed)?;
    let clear = contents
        .encrypted_key
        .decrypt(secret)
        .map_err(|_| BackupError::Tampered {
            entry: KEY_ENTRY.to_string(),
            reason: "it cannot be decrypted although the archive's integrity check passed, so \
                     the archive is corrupt or was not made by zonepki"
                .to_string(),
        })?;
    let key = PrivateKey::from_pkcs8(clear.as_bytes()).map_err(|e| BackupError::BadKey {
        reason: e.to_string(),
    })?;
    if &key.public_key_info() != contents.certificate.public_key() {
        return Err(BackupError::KeyMismatch);
    }
    Ok(Restored {
        zone_ca_sha256: parsed.manifest.ca_sha256.clone(),
        created_at: parsed.manifest.created_at,
        certificate: contents.certificate,
        key,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    version: u64,
    created_at: Timestamp,
    ca_subject: String,
    ca_sha256: String,
    entries: EntryHashes,
    kdf: KdfParams,
    mac: String,
    mac_salt: String,
}

/// Only what is needed to tell a newer format from a damaged one.
#[derive(Deserialize)]
struct ManifestHead {
    format: String,
    version: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryHashes {
    #[serde(rename = "ca.pem")]
    ca_pem: String,
    #[serde(rename = "ca-key.p8.pem")]
    ca_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    alg: String,
    iterations: u32,
    salt: String,
}

/// An archive whose structure and manifest are sound (nothing authenticated yet).
struct Parsed {
    manifest_json: Vec<u8>,
    manifest: Manifest,
    mac: Vec<u8>,
    mac_salt: Vec<u8>,
    key_salt: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// The certificate and the still-encrypted key, checked against the manifest.
struct Contents {
    certificate: Certificate,
    encrypted_key: pkcs8::EncryptedPrivateKeyInfoOwned,
}

fn crypto_err(e: impl fmt::Display) -> BackupError {
    BackupError::Crypto {
        reason: e.to_string(),
    }
}

fn bad_manifest(reason: impl Into<String>) -> BackupError {
    BackupError::BadManifest {
        reason: reason.into(),
    }
}

fn bad_key(reason: impl Into<String>) -> BackupError {
    BackupError::BadKey {
        reason: reason.into(),
    }
}

fn random<const N: usize>() -> Result<[u8; N], BackupError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| BackupError::Crypto {
        reason: format!("the operating system's random number generator failed: {e}"),
    })?;
    Ok(b)
}

/// Lower-case hex, as the manifest writes digests, salts and the MAC.
fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// Hex of either case (constant-time decoding: the MAC is compared after this).
fn unhex(s: &str) -> Option<Vec<u8>> {
    base16ct::mixed::decode_vec(s).ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The MAC key: PBKDF2-HMAC-SHA256(secret, mac_salt, iterations), 32 bytes.
fn derive_mac_key(secret: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, key.as_mut());
    key
}

fn new_mac(key: &[u8; 32]) -> Result<Hmac<Sha256>, BackupError> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(crypto_err)
}

/// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) encrypted PKCS#8 PEM of `key` (S5).
fn encrypt_key(
    key: &PrivateKey,
    secret: &[u8],
    iterations: u32,
    salt: &[u8],
    iv: [u8; 16],
) -> Result<String, BackupError> {
    let params = pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(iterations, salt, iv)
        .map_err(crypto_err)?;
    let clear = key.to_pkcs8_der();
    let info = pkcs8::PrivateKeyInfoRef::from_der(&clear).map_err(crypto_err)?;
    let encrypted = info
        .encrypt_with_params(params, secret)
        .map_err(crypto_err)?;
    pem_rfc7468::encode_string(
        KEY_PEM_LABEL,
        pem_rfc7468::LineEnding::LF,
        encrypted.as_bytes(),
    )
    .map_err(crypto_err)
}

fn write_zip(now: Timestamp, entries: [(&str, &[u8]); 4]) -> Result<Vec<u8>, BackupError> {
    let t = now.to_offset();
    let modified = u16::try_from(t.year())
        .ok()
        .and_then(|year| {
            zip::DateTime::from_date_and_time(
                year,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            )
            .ok()
        })
        .unwrap_or_default();
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(modified)
        .unix_permissions(0o600);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        zip.start_file(name, options).map_err(crypto_err)?;
        zip.write_all(data).map_err(crypto_err)?;
    }
    Ok(zip.finish().map_err(crypto_err)?.into_inner())
}

/// A name shown in an error: escaped, and cut short.
fn shown_name(raw: &[u8]) -> String {
    let mut s: String = String::from_utf8_lossy(raw)
        .escape_debug()
        .take(100)
        .collect();
    s.insert(0, '"');
    s.push('"');
    s
}

/// Which of the four entries `raw` names, refusing paths and unknown names.
fn check_name(raw: &[u8]) -> Result<&'static str, BackupError> {
    let unsafe_name = || BackupError::UnsafeEntryName {
        name: shown_name(raw),
    };
    let name = std::str::from_utf8(raw).map_err(|_| unsafe_name())?;
    if name.is_empty()
        || name.contains(['/', '\\', ':'])
        || name.contains("..")
        || name.chars().any(char::is_control)
    {
        return Err(unsafe_name());
    }
    ENTRY_NAMES
        .into_iter()
        .find(|known| *known == name)
        .ok_or_else(|| BackupError::UnexpectedEntry {
            name: shown_name(raw),
        })
}

/// The names of the central directory's records in order, duplicates kept (the zip crate's
/// index keeps one record per name; this finds which name was repeated).
fn central_directory_names(archive: &[u8], start: u64) -> Vec<&[u8]> {
    const CENTRAL_HEADER: &[u8; 4] = b"PK\x01\x02";
    const FIXED: usize = 46;
    let mut names = Vec::new();
    let Ok(mut pos) = usize::try_from(start) else {
        return names;
    };
    while let Some(header) = archive.get(pos..pos.saturating_add(FIXED)) {
        if !header.starts_with(CENTRAL_HEADER) {
            break;
        }
        let field = |at: usize| {
            usize::from(u16::from_le_bytes([
                header.get(at).copied().unwrap_or(0),
                header.get(at + 1).copied().unwrap_or(0),
            ]))
        };
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let name_start = pos + FIXED;
        let Some(name) = archive.get(name_start..name_start + name_len) else {
            break;
        };
        names.push(name);
        pos = name_start + name_len + extra_len + comment_len;
    }
    names
}

/// Tells a cut-off archive from one that never was a zip.
fn classify_zip_error(archive: &[u8], e: &zip::result::ZipError) -> BackupError {
    let reason = e.to_string();
    let starts_like_zip = archive.starts_with(b"PK\x03\x04");
    let end_record = archive.windows(4).any(|w| w == b"PK\x05\x06");
    if starts_like_zip && !end_record {
        BackupError::Truncated { reason }
    } else if starts_like_zip || end_record {
        BackupError::DamagedZip { reason }
    } else {
        BackupError::NotAZip { reason }
    }
}

/// Reads one entry by name, bounded by [`MAX_ENTRY_BYTES`] whatever its header claims.
fn read_entry(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
) -> Result<Vec<u8>, BackupError> {
    let too_large = |size: u64| BackupError::TooLarge {
        what: format!("the size in bytes of entry {name}"),
        size,
        limit: MAX_ENTRY_BYTES,
    };
    let damaged = |e: &dyn fmt::Display| BackupError::Tampered {
        entry: name.to_string(),
        reason: e.to_string(),
    };
    let file = match zip.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(BackupError::MissingEntry { name });
        }
        Err(e) => return Err(damaged(&e)),
    };
    if file.encrypted() {
        return Err(BackupError::DamagedZip {
            reason: format!("{name} uses zip encryption, which zonepki backups never use"),
        });
    }
    if file.size() > MAX_ENTRY_BYTES {
        return Err(too_large(file.size()));
    }
    let mut data = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| damaged(&e))?;
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if len > MAX_ENTRY_BYTES {
        return Err(too_large(len));
    }
    Ok(data)
}

/// Steps 1 to 3 of the module docs: sizes, zip structure, names, manifest.
fn read_archive(
    archive: &[u8],
    kind: Kind,
    iterations: RangeInclusive<u32>,
) -> Result<Parsed, BackupError> {
    if archive.is_empty() {
        return Err(BackupError::NotAZip {
            reason: "the input is empty".into(),
        });
    }
    if archive.len() > MAX_ARCHIVE_BYTES {
        return Err(BackupError::TooLarge {
            what: "the archive size in bytes".into(),
            size: u64::try_from(archive.len()).unwrap_or(u64::MAX),
            limit: u64::try_from(MAX_ARCHIVE_BYTES).unwrap_or(u64::MAX),
        });
    }
    let mut zip =
        zip::ZipArchive::new(Cursor::new(archive)).map_err(|e| classify_zip_error(archive, &e))?;
    if zip.offset() != 0 {
        return Err(BackupError::DamagedZip {
            reason: format!("{} bytes of unknown data precede the archive", zip.offset()),
        });
    }
    if zip.len() > MAX_ENTRIES {
        return Err(BackupError::TooLarge {
            what: "the number of entries".into(),
            size: u64::try_from(zip.len()).unwrap_or(u64::MAX),
            limit: u64::try_from(MAX_ENTRIES).unwrap_or(u64::MAX),
        });
    }
    for raw in zip.file_names_raw() {
        check_name(raw)?;
    }
    if zip.has_duplicate_names() {
        let names = central_directory_names(archive, zip.central_directory_start());
        let repeated = names
            .iter()
            .enumerate()
            .find(|(i, n)| names.get(..*i).is_some_and(|before| before.contains(n)))
            .map_or_else(|| "(unknown)".to_string(), |(_, n)| shown_name(n));
        return Err(BackupError::DuplicateEntry { name: repeated });
    }
    zip.validate_header_consistency()
        .map_err(|e| BackupError::DamagedZip {
            reason: e.to_string(),
        })?;
    // Every name is known and none is repeated; reading by name finds each missing one.
    let manifest_json = read_entry(&mut zip, MANIFEST_ENTRY)?;
    let mac_file = read_entry(&mut zip, MAC_ENTRY)?;
    let cert_pem = read_entry(&mut zip, CERT_ENTRY)?;
    let key_pem = read_entry(&mut zip, KEY_ENTRY)?;

    let head: ManifestHead = serde_json::from_slice(&manifest_json)
        .map_err(|e| bad_manifest(format!("not the JSON of a zonepki backup manifest: {e}")))?;
    if kind == Kind::Backup && head.format == TRANSFER_FORMAT {
        return Err(bad_manifest(format!(
            "its format is {TRANSFER_FORMAT:?}: this is the one-time transfer of a Move CA \
             role, not a backup, and no passphrase opens it; restore from a CA backup"
        )));
    }
    if kind == Kind::Transfer && head.format != TRANSFER_FORMAT {
        return Err(bad_manifest(format!(
            "its format is {:?}, not {TRANSFER_FORMAT:?}: a Move CA role takes only the \
             transfer archive made for it",
            head.format.chars().take(100).collect::<String>()
        )));
    }
    if head.format != kind.format() {
        return Err(bad_manifest(format!(
            "its format is {:?}, not {FORMAT:?}: this is not a zonepki CA backup",
            head.format.chars().take(100).collect::<String>()
        )));
    }
    if head.version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion {
            found: head.version,
            supported: FORMAT_VERSION,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_json).map_err(|e| {
        bad_manifest(format!(
            "it does not have the fields of version {FORMAT_VERSION}: {e}"
        ))
    })?;
    if manifest.kdf.alg != KDF_ALG {
        return Err(bad_manifest(format!("kdf.alg must be {KDF_ALG:?}")));
    }
    if manifest.mac != MAC_ALG {
        return Err(bad_manifest(format!("mac must be {MAC_ALG:?}")));
    }
    if !iterations.contains(&manifest.kdf.iterations) {
        return Err(bad_manifest(format!(
            "kdf.iterations is {}; accepted: {} to {}",
            manifest.kdf.iterations,
            iterations.start(),
            iterations.end()
        )));
    }
    let salt = |field: &str, value: &str| {
        unhex(value)
            .filter(|s| (MIN_SALT_LEN..=MAX_SALT_LEN).contains(&s.len()))
            .ok_or_else(|| {
                bad_manifest(format!(
                    "{field} must be {MIN_SALT_LEN} to {MAX_SALT_LEN} bytes in hex"
                ))
            })
    };
    let mac_salt = salt("mac_salt", &manifest.mac_salt)?;
    let key_salt = salt("kdf.salt", &manifest.kdf.salt)?;
    let mac = std::str::from_utf8(&mac_file)
        .ok()
        .and_then(|s| unhex(s.trim_end_matches('\n')))
        .filter(|m| m.len() == 32)
        .ok_or_else(|| BackupError::Tampered {
            entry: MAC_ENTRY.to_string(),
            reason: "it is not a hex HMAC-SHA256 (64 hex digits)".into(),
        })?;
    Ok(Parsed {
        manifest_json,
        manifest,
        mac,
        mac_salt,
        key_salt,
        cert_pem,
        key_pem,
    })
}

/// Steps 5 and 7 (without the key): entry hashes, certificate, the key's PBES2 parameters.
fn check_contents(parsed: &Parsed) -> Result<Contents, BackupError> {
    let m = &parsed.manifest;
    for (entry, data, expected) in [
        (CERT_ENTRY, &parsed.cert_pem, &m.entries.ca_pem),
        (KEY_ENTRY, &parsed.key_pem, &m.entries.ca_key),
    ] {
        if sha256_hex(data) != *expected {
            return Err(BackupError::Tampered {
                entry: entry.to_string(),
                reason: "its SHA-256 differs from the one recorded in manifest.json".into(),
            });
        }
    }

    let (label, der) = pem_rfc7468::decode_vec(&parsed.cert_pem).map_err(|e| {
        BackupError::BadCertificate(CertError::Malformed {
            reason: format!("not PEM: {e}"),
        })
    })?;
    if label != CERT_PEM_LABEL {
        return Err(BackupError::BadCertificate(CertError::Malformed {
            reason: format!("PEM label {label:?}, expected {CERT_PEM_LABEL}"),
        }));
    }
    let certificate = Certificate::from_der(&der).map_err(BackupError::BadCertificate)?;
    // An RSA CA in a build without the `rsa` feature: say so before any KDF runs, rather than
    // fail on the decrypted key (and advise another copy, which would fail the same way).
    if let Err(e @ KeyError::RsaNotEnabled { .. }) = KeyAlgorithm::of_spki(certificate.public_key())
    {
        return Err(BackupError::UnsupportedKey(e));
    }
    if Fingerprint::sha256(&der).to_string() != m.ca_sha256 {
        return Err(bad_manifest(
            "ca_sha256 is not the SHA-256 of ca.pem's certificate",
        ));
    }
    if certificate.subject() != m.ca_subject {
        return Err(bad_manifest("ca_subject is not ca.pem's subject"));
    }

    let (label, der) = pem_rfc7468::decode_vec(&parsed.key_pem)
        .map_err(|e| bad_key(format!("{KEY_ENTRY} is not PEM: {e}")))?;
    if label != KEY_PEM_LABEL {
        return Err(bad_key(format!(
            "{KEY_ENTRY} has PEM label {label:?}; a backup's key must be {KEY_PEM_LABEL}"
        )));
    }
    let encrypted_key = pkcs8::EncryptedPrivateKeyInfoOwned::from_der(&der)
        .map_err(|e| bad_key(format!("{KEY_ENTRY} is not encrypted PKCS#8: {e}")))?;
    check_key_encryption(&encrypted_key, parsed)?;
    Ok(Contents {
        certificate,
        encrypted_key,
    })
}

/// The key must be encrypted as S5 says and as the manifest records: PBES2, PBKDF2 with
/// HMAC-SHA256 at the manifest's iteration count and salt, AES-256-CBC.
fn check_key_encryption(
    key: &pkcs8::EncryptedPrivateKeyInfoOwned,
    parsed: &Parsed,
) -> Result<(), BackupError> {
    let not_s5 = || {
        bad_key(format!(
            "{KEY_ENTRY} is not encrypted with PBES2, PBKDF2-HMAC-SHA256 and AES-256-CBC (S5)"
        ))
    };
    let params = key.encryption_algorithm.pbes2().ok_or_else(not_s5)?;
    let kdf = params.kdf.pbkdf2().ok_or_else(not_s5)?;
    if kdf.prf != pbes2::Pbkdf2Prf::HmacWithSha256
        || !matches!(params.encryption, pbes2::EncryptionScheme::Aes256Cbc { .. })
    {
        return Err(not_s5());
    }
    if kdf.key_length.is_some_and(|len| len != 32) {
        return Err(not_s5());
    }
    if kdf.iteration_count != parsed.manifest.kdf.iterations
        || kdf.salt.as_bytes() != parsed.key_salt.as_slice()
    {
        return Err(bad_manifest(format!(
            "kdf does not describe how {KEY_ENTRY} is encrypted (iterations or salt differ)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaParams, Serial, self_signed_ca};
    use crate::key::KeySpec;
    use proptest::prelude::*;

    /// Low enough for many cases per test; the format is the same at any count.
    const TEST_ITERATIONS: u32 = 1_000;
    const PP: &str = "correct horse battery";

    fn now() -> Timestamp {
        "2027-03-01T12:00:00Z".parse().unwrap()
    }

    fn ca(spec: KeySpec) -> (Certificate, PrivateKey) {
        let key = PrivateKey::generate(spec).unwrap();
        let params = CaParams {
            common_name: "Acme".into(),
            validity: 10.try_into().unwrap(),
        };
        let cert = self_signed_ca(&key, &params, &Serial::random().unwrap(), now()).unwrap();
        (cert, key)
    }

    fn pp() -> Passphrase {
        Passphrase::new(PP).unwrap()
    }

    fn fast_archive() -> (Certificate, PrivateKey, Vec<u8>) {
        let (cert, key) = ca(KeySpec::P256);
        let zip = create_with(&cert, &key, &pp(), now(), TEST_ITERATIONS).unwrap();
        (cert, key, zip)
    }

    fn fast_open(zip: &[u8]) -> Result<Restored, BackupError> {
        open_with(zip, &pp(), TEST_ITERATIONS..=TEST_ITERATIONS)
    }

    /// The result of opening `zip` must be an error or exactly the original CA.
    fn assert_error_or_same(zip: &[u8], cert: &Certificate, key: &PrivateKey) {
        if let Ok(r) = fast_open(zip) {
            assert_eq!(&r.certificate, cert);
            assert_eq!(r.key.public_key_der(), key.public_key_der());
            assert_eq!(r.key.to_pkcs8_der(), key.to_pkcs8_der());
            assert_eq!(r.created_at, now());
        }
    }

    #[test]
    fn round_trip_at_low_iterations() {
        let (cert, key, zip) = fast_archive();
        let r = fast_open(&zip).unwrap();
        assert_eq!(r.certificate, cert);
        assert_eq!(r.key.to_pkcs8_der(), key.to_pkcs8_der());
        assert_eq!(r.created_at, now());
        assert_eq!(
            r.zone_ca_sha256,
            Fingerprint::sha256(cert.der().as_bytes()).to_string()
        );
        // The public entry points refuse an archive below S5's iteration count.
        let e = open(&zip, &pp()).unwrap_err();
        assert!(matches!(e, BackupError::BadManifest { .. }), "{e:?}");
        let e = inspect(&zip).unwrap_err();
        assert!(matches!(e, BackupError::BadManifest { .. }), "{e:?}");
    }

    /// The four entries of `zip`, by name, in [`ENTRY_NAMES`] order.
    fn entries(zip: &[u8]) -> [Vec<u8>; 4] {
        let parsed = read_archive(zip, Kind::Transfer, 1..=MAX_PBKDF2_ITERATIONS)
            .or_else(|_| read_archive(zip, Kind::Backup, 1..=MAX_PBKDF2_ITERATIONS))
            .unwrap();
        let mut mac = hex(&parsed.mac);
        mac.push('\n');
        [
            parsed.manifest_json,
            mac.into_bytes(),
            parsed.cert_pem,
            parsed.key_pem,
        ]
    }

    #[test]
    fn mv1_transfer_runs_one_iteration_and_opens_only_with_its_key() {
        let (cert, key) = ca(KeySpec::P256);
        let tk = TransferKey::generate().unwrap();
        let zip = create_transfer(&cert, &key, &tk, now()).unwrap();
        let parsed = read_archive(&zip, Kind::Transfer, 1..=1).unwrap();
        assert_eq!(parsed.manifest.format, TRANSFER_FORMAT);
        assert_eq!(parsed.manifest.kdf.iterations, TRANSFER_ITERATIONS);
        assert_eq!(TRANSFER_ITERATIONS, 1);
        let r = open_transfer(&zip, &tk).unwrap();
        assert_eq!(r.certificate, cert);
        assert_eq!(r.key.to_pkcs8_der(), key.to_pkcs8_der());
        // Another key: the MAC fails, as a wrong passphrase does.
        let other = TransferKey::generate().unwrap();
        assert_eq!(
            open_transfer(&zip, &other).unwrap_err(),
            BackupError::WrongPassphrase
        );
        // Never a backup: open and inspect refuse it by its format, before any KDF.
        for e in [open(&zip, &pp()).unwrap_err(), inspect(&zip).unwrap_err()] {
            assert!(matches!(e, BackupError::BadManifest { .. }), "{e:?}");
            assert!(e.to_string().contains("one-time transfer"), "{e}");
        }
        // The key never shows in Debug.
        assert_eq!(format!("{tk:?}"), "TransferKey([secret elided])");
    }

    #[test]
    fn mv1_a_backup_is_not_a_transfer() {
        let (_, _, zip) = fast_archive();
        let e = open_transfer(&zip, &TransferKey::generate().unwrap()).unwrap_err();
        assert!(matches!(e, BackupError::BadManifest { .. }), "{e:?}");
        assert!(e.to_string().contains(TRANSFER_FORMAT), "{e}");
    }

    /// S5 downgrade: relabelling a one-iteration transfer archive as a backup does not make
    /// it restorable as one. `open` refuses its iteration count before any KDF, and at any
    /// accepted count the relabelled manifest fails the MAC.
    #[test]
    fn s5_a_transfer_relabelled_as_a_backup_is_refused() {
        let (cert, key) = ca(KeySpec::P256);
        let tk = TransferKey::generate().unwrap();
        let zip = create_transfer(&cert, &key, &tk, now()).unwrap();
        let [manifest, mac, cert_pem, key_pem] = entries(&zip);
        let relabelled_manifest = String::from_utf8(manifest)
            .unwrap()
            .replace(TRANSFER_FORMAT, FORMAT);
        let relabelled = write_zip(
            now(),
            [
                (MANIFEST_ENTRY, relabelled_manifest.as_bytes()),
                (MAC_ENTRY, &mac),
                (CERT_ENTRY, &cert_pem),
                (KEY_ENTRY, &key_pem),
            ],
        )
        .unwrap();
        for e in [
            open(&relabelled, &pp()).unwrap_err(),
            inspect(&relabelled).unwrap_err(),
        ] {
            assert!(e.to_string().contains("kdf.iterations is 1;"), "{e}");
        }
        // Even a reader that accepted one iteration would need the MAC, which the relabelling
        // broke (the key is not a passphrase anyone knows, and the format is authenticated).
        assert_eq!(
            unseal(&relabelled, tk.0.as_slice(), Kind::Backup, 1..=1).unwrap_err(),
            BackupError::WrongPassphrase
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abFF"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
        assert_eq!(unhex(""), Some(vec![]));
    }

    #[test]
    fn names_are_checked() {
        for ok in ENTRY_NAMES {
            assert_eq!(check_name(ok.as_bytes()).unwrap(), ok);
        }
        for bad in [
            &b"../ca.pem"[..],
            b"/ca.pem",
            b"a/ca.pem",
            b"a\\ca.pem",
            b"C:ca.pem",
            b"..",
            b"",
            b"ca.pem\0",
            b"\xff\xfe",
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(matches!(e, BackupError::UnsafeEntryName { .. }), "{bad:?}");
        }
        let e = check_name(b"notes.txt").unwrap_err();
        assert!(matches!(e, BackupError::UnexpectedEntry { .. }));
        // Control characters in a name never reach a message unescaped.
        let e = check_name(b"a\x1b[31m/b").unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e}");
    }

    #[test]
    fn every_single_byte_flip_is_an_error_or_harmless() {
        let (cert, key, zip) = fast_archive();
        let mut harmless = 0;
        for i in 0..zip.len() {
            for bit in [0x01u8, 0x80] {
                let mut z = zip.clone();
                z[i] ^= bit;
                if fast_open(&z).is_ok() {
                    harmless += 1;
                }
                assert_error_or_same(&z, &cert, &key);
            }
        }
        // Only zip metadata nothing reads (times, attributes, version fields) may change
        // without an error: well under 5% of the bytes.
        assert!(
            harmless * 20 < zip.len() * 2,
            "{harmless} of {}",
            zip.len() * 2
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (_, _, zip) = fast_archive();
        for len in 0..zip.len() {
            assert!(fast_open(&zip[..len]).is_err(), "length {len}");
        }
        let e = fast_open(&zip[..zip.len() / 2]).unwrap_err();
        assert!(matches!(e, BackupError::Truncated { .. }), "{e:?}");
    }

    #[test]
    fn a_manifest_below_or_above_the_bounds_is_refused_before_any_kdf() {
        let (cert, key) = ca(KeySpec::P256);
        let zip = create_with(&cert, &key, &pp(), now(), 999).unwrap();
        let e = fast_open(&zip).unwrap_err();
        assert!(e.to_string().contains("kdf.iterations is 999"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn mutations_never_panic_nor_change_the_result(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in proptest::option::of(any::<usize>()),
        ) {
            FIXTURE.with(|(cert, key, zip)| {
                let mut z = zip.clone();
                for (at, value) in edits {
                    let i = at % z.len();
                    z[i] = value;
                }
                if let Some(c) = cut {
                    z.truncate(c % (z.len() + 1));
                }
                let _ = inspect(&z);
                assert_error_or_same(&z, cert, key);
            });
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(fast_open(&data).is_err());
            prop_assert!(inspect(&data).is_err());
        }
    }

    thread_local! {
        static FIXTURE: (Certificate, PrivateKey, Vec<u8>) = fast_archive();
    }
}
