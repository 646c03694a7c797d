//! Reading and writing whole files of certificates (CE1).
//!
//! Administrators upload a trusted root or a complete chain (server -> intermediates -> root)
//! as `.der`, `.cer`, `.crt`, `.p7b`, `.pem` or `.cert`. The file name never matters: the
//! CONTENT decides the format (CE1). Accepted are
//!
//! * PEM: any number of `CERTIFICATE` blocks (also `X509 CERTIFICATE` and `TRUSTED
//!   CERTIFICATE`) and/or PKCS#7 blocks (`PKCS7`, `CMS`, `PKCS #7 SIGNED DATA`), with any text
//!   before, between and after the blocks (openssl's `-print_certs` writes `subject=` lines).
//!   Private-key blocks next to certificates are skipped without being decoded, so a key is
//!   never echoed into an error;
//! * DER: one certificate;
//! * DER PKCS#7 / CMS certs-only `SignedData` (`openssl crl2pkcs7 -nocrl -outform DER`,
//!   `certtool --p7-generate --outder`).
//!
//! Several DER certificates concatenated back to back are not a supported format (there is no
//! standard for it), and BER indefinite-length encodings are refused; both with an error that
//! says how to convert the file. Hostile input is bounded by [`MAX_INPUT_LEN`] and
//! [`MAX_CERTIFICATES`].

use std::path::Path;

use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignerInfos};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use der::{Any, Decode, Encode, Header, Length, Reader, Sequence, SliceReader, Tag, Writer};

use super::{CertError, Certificate, CertificateDer};

/// The largest input [`read_certificates`] and [`read_file`] accept: 16 MiB (CE1 hostile input).
pub const MAX_INPUT_LEN: usize = 16 * 1024 * 1024;

/// The most certificates one file may hold (CE1 hostile input); a real chain has a handful.
pub const MAX_CERTIFICATES: usize = 1000;

/// Detected container format (CE1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BundleFormat {
    /// PEM text with `CERTIFICATE` and/or PKCS#7 blocks.
    Pem,
    /// One DER certificate.
    Der,
    /// A DER PKCS#7 / CMS `SignedData` (a `.p7b` bundle).
    Pkcs7Der,
}

/// Why a file is not a usable set of certificates (CE1). Messages say what was wrong, what was
/// expected and what to do; they never contain private-key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// No bytes, or only whitespace.
    #[error(
        "the file is empty: expected certificates as PEM (-----BEGIN CERTIFICATE-----), DER or \
         a PKCS#7 bundle (.p7b)"
    )]
    Empty,
    /// Larger than [`MAX_INPUT_LEN`].
    #[error(
        "the file is {len} bytes, more than the limit of {limit} bytes for certificate files; \
         upload only the certificate chain (server, intermediates, root)"
    )]
    TooLarge {
        /// The input's size in bytes.
        len: u64,
        /// The limit, [`MAX_INPUT_LEN`].
        limit: u64,
    },
    /// Neither PEM, nor DER, nor PKCS#7.
    #[error(
        "unrecognised certificate file: {hint}; expected PEM (-----BEGIN CERTIFICATE-----), a \
         DER certificate or a PKCS#7 bundle (.p7b) in PEM or DER"
    )]
    UnknownFormat {
        /// What the input looks like instead, and how to convert it.
        hint: String,
    },
    /// PEM armour or base64 that cannot be decoded (truncated file, bad base64, BEGIN without
    /// END).
    #[error("malformed PEM: {reason}; re-export the certificates as PEM or DER")]
    BadPem {
        /// What is wrong, with the block's label and line number.
        reason: String,
    },
    /// A PEM block that holds something other than certificates (a CSR, a CRL, a public key).
    #[error(
        "PEM block \"{label}\": {}; expected -----BEGIN CERTIFICATE----- or -----BEGIN PKCS7----- \
         blocks",
        describe_label(.label)
    )]
    UnexpectedPemLabel {
        /// The block's label, e.g. `CERTIFICATE REQUEST` (at most 64 printable characters).
        label: String,
    },
    /// DER that is a well-formed object of another type (a CSR, a CRL, a key, a PKCS#12).
    #[error("the file is {found}, not a certificate; {advice}")]
    NotCertificate {
        /// What the input is, e.g. "a CSR (certificate signing request) in DER form".
        found: &'static str,
        /// What to upload instead.
        advice: &'static str,
    },
    /// A PKCS#7 / CMS structure that cannot be read (truncated, wrong content type, BER).
    #[error("malformed PKCS#7 bundle: {reason}")]
    BadPkcs7 {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Well-formed input without a single X.509 certificate (e.g. only a private key).
    #[error("no certificates found: {detail}")]
    NoCertificates {
        /// What was found instead.
        detail: String,
    },
    /// More than [`MAX_CERTIFICATES`] certificates.
    #[error(
        "more than {limit} certificates in one file; upload only the chain (server, \
         intermediates, root)"
    )]
    TooManyCertificates {
        /// The limit, [`MAX_CERTIFICATES`].
        limit: usize,
    },
    /// One certificate in the file is not a valid X.509 certificate.
    #[error("certificate #{} in the file: {source}", .index + 1)]
    Certificate {
        /// Position among the file's certificates, counting from 0 (the message counts from 1).
        index: usize,
        /// Why it is unusable.
        source: CertError,
    },
    /// The file cannot be read, or holds more than [`MAX_INPUT_LEN`] bytes however it
    /// reports its size (a pipe, a device); the error names the path.
    #[error(transparent)]
    File(#[from] crate::fsio::FileError),
}

/// What a PEM label that is not a certificate is, for [`BundleError::UnexpectedPemLabel`].
fn describe_label(label: &str) -> &'static str {
    match label {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
            "this is a CSR (certificate signing request), not a certificate; upload the \
             certificate the CA issued for it"
        }
        "X509 CRL" => "this is a CRL (certificate revocation list), not a certificate",
        "PUBLIC KEY" | "RSA PUBLIC KEY" => "this is a bare public key, not a certificate",
        "ATTRIBUTE CERTIFICATE" => "attribute certificates are not X.509 public-key certificates",
        _ => "this is not a certificate",
    }
}

/// Which parser an input goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Pem,
    DerCertificate,
    Pkcs7,
}

/// Detects the container format from the content alone (CE1).
///
/// This looks at the outer structure only (PEM armour, the DER header and the first inner tag);
/// [`read_certificates`] decodes and checks everything. A file that is not a certificate
/// container at all (a DER key, PKCS#12, garbage) is an error here already.
pub fn detect(bytes: &[u8]) -> Result<BundleFormat, BundleError> {
    Ok(match classify(bytes)? {
        Input::Pem => BundleFormat::Pem,
        Input::DerCertificate => BundleFormat::Der,
        Input::Pkcs7 => BundleFormat::Pkcs7Der,
    })
}

/// Reads every certificate in `bytes` (PEM, DER or PKCS#7, decided by content; CE1), in file
/// order. Succeeds only with at least one certificate; any unusable part is an error.
pub fn read_certificates(bytes: &[u8]) -> Result<Vec<Certificate>, BundleError> {
    let mut out = Vec::new();
    match classify(bytes)? {
        Input::Pem => read_pem(bytes, &mut out)?,
        Input::DerCertificate => read_der_certificate(bytes, &mut out)?,
        Input::Pkcs7 => read_pkcs7(bytes, &mut out)?,
    }
    if out.is_empty() {
        return Err(BundleError::NoCertificates {
            detail: "the file holds none".into(),
        });
    }
    Ok(out)
}

/// Reads the certificates in the file at `path`, whatever its extension (CE1: `.der`, `.cer`,
/// `.crt`, `.p7b`, `.pem`, `.cert` or any other name). I/O failures name the path.
pub fn read_file(path: &Path) -> Result<Vec<Certificate>, BundleError> {
    // Bounded whatever the file is: at most MAX_INPUT_LEN + 1 bytes are read.
    let bytes = crate::fsio::read(path, MAX_INPUT_LEN as u64, "a certificate file")?;
    read_certificates(&bytes)
}

/// Concatenated `-----BEGIN CERTIFICATE-----` blocks, LF line endings, in the given order.
pub fn to_pem(certs: &[CertificateDer]) -> String {
    certs.iter().map(CertificateDer::to_pem).collect()
}

/// A degenerate, certs-only PKCS#7 `SignedData` (RFC 5652 5.1, RFC 2315 9.1 "certs-only") in
/// DER, the way `openssl crl2pkcs7 -nocrl` writes it: version 1, no digest algorithms, empty
/// `id-data` content, the certificates in the given order, no CRLs, no signers (CE1).
///
/// Each certificate is embedded byte for byte; an entry that is not a DER certificate gives a
/// bundle that readers (this module included) refuse.
///
/// # Panics
///
/// When the certificates together exceed 4 GiB, the most DER can express.
pub fn to_pkcs7_der(certs: &[CertificateDer]) -> Vec<u8> {
    let signed_data = SignedDataView {
        version: CmsVersion::V1,
        digest_algorithms: DigestAlgorithmIdentifiers::default(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(certs.iter().map(|c| RawTlv(c.as_bytes())).collect()),
        crls: None,
        signer_infos: SignerInfos(Default::default()),
    };
    let content = Any::encode_from(&signed_data)
        .expect("a SignedData whose certificates total less than 4 GiB encodes");
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content,
    }
    .to_der()
    .expect("a ContentInfo whose certificates total less than 4 GiB encodes")
}

/// [`to_pkcs7_der`] as PEM with the label `PKCS7` (what `openssl crl2pkcs7` writes), LF.
///
/// # Panics
///
/// As [`to_pkcs7_der`].
pub fn to_pkcs7_pem(certs: &[CertificateDer]) -> String {
    pem_rfc7468::encode_string("PKCS7", pem_rfc7468::LineEnding::LF, &to_pkcs7_der(certs))
        .expect("PEM encoding of a DER blob below 4 GiB cannot fail")
}

// ---------------------------------------------------------------------------------------------
// Format detection.

/// A UTF-8 byte order mark, which some editors put before PEM text.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decides which parser gets `bytes` (CE1: content, never the name).
fn classify(bytes: &[u8]) -> Result<Input, BundleError> {
    if bytes.is_empty() {
        return Err(BundleError::Empty);
    }
    if bytes.len() > MAX_INPUT_LEN {
        return Err(BundleError::TooLarge {
            len: bytes.len() as u64,
            limit: MAX_INPUT_LEN as u64,
        });
    }
    // DER first: a DER certificate may carry text that looks like a PEM BEGIN line (in a name,
    // say), and must still be read as the DER it is.
    // Text that merely starts with "0" (0x30) goes to PEM when it has PEM blocks.
    if bytes[0] == 0x30 && (plausible_der(bytes) || !has_pem_begin(bytes)) {
        return der_kind(bytes);
    }
    if has_pem_begin(bytes) {
        return Ok(Input::Pem);
    }
    let text = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if text.trim_ascii().is_empty() {
        return Err(BundleError::Empty);
    }
    Err(BundleError::UnknownFormat {
        hint: unknown_hint(text).into(),
    })
}

/// What unrecognised input looks like, without echoing any of it.
fn unknown_hint(bytes: &[u8]) -> &'static str {
    let trimmed = bytes.trim_ascii();
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || b"+/=".contains(b);
    let is_text = |b: &u8| b.is_ascii_graphic() || b.is_ascii_whitespace() || *b >= 0x80;
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        "the file is UTF-16 text; save it as ASCII or UTF-8"
    } else if trimmed.len() >= 16
        && trimmed
            .iter()
            .all(|b| is_base64(b) || b.is_ascii_whitespace())
    {
        "base64 text without -----BEGIN/-----END lines; put -----BEGIN CERTIFICATE----- before \
         it and -----END CERTIFICATE----- after it"
    } else if std::str::from_utf8(bytes).is_ok() && bytes.iter().all(is_text) {
        "text without any -----BEGIN ...----- line"
    } else {
        "binary data that is not DER (DER certificates and PKCS#7 bundles start with byte 0x30)"
    }
}

/// Whether some line starts (after whitespace) with `-----BEGIN `.
fn has_pem_begin(bytes: &[u8]) -> bool {
    lines(bytes).any(|(_, line)| line.starts_with(b"-----BEGIN "))
}

/// The lines of `bytes` with their 1-based numbers, trimmed of ASCII whitespace (so CRLF works)
/// and of a leading UTF-8 byte order mark.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_ascii()))
}

/// Whether `bytes` starts with a DER SEQUENCE header whose length fits the input and whose
/// first element is a SEQUENCE, OBJECT IDENTIFIER or INTEGER.
fn plausible_der(bytes: &[u8]) -> bool {
    match outer_header(bytes) {
        Ok((h, n)) => {
            usize::try_from(h.length()).is_ok_and(|len| n.saturating_add(len) <= bytes.len())
                && matches!(bytes.get(n), Some(0x30 | 0x06 | 0x02))
        }
        Err(_) => false,
    }
}

/// Classifies a DER input starting with a SEQUENCE: a certificate (inner SEQUENCE) or a
/// PKCS#7 ContentInfo (inner OBJECT IDENTIFIER); truncation, trailing data and BER
/// indefinite lengths are errors here.
fn der_kind(bytes: &[u8]) -> Result<Input, BundleError> {
    let inner_tag = |at: usize| bytes.get(at).copied();
    let header_err = |kind: Input, reason: String| match kind {
        Input::Pkcs7 => BundleError::BadPkcs7 { reason },
        _ => BundleError::Certificate {
            index: 0,
            source: CertError::Malformed { reason },
        },
    };
    let (header, header_len) = match outer_header(bytes) {
        Ok(h) => h,
        Err(e) => {
            // The inner tag right after a short (2-byte) or indefinite header.
            let kind = if inner_tag(2) == Some(0x06) {
                Input::Pkcs7
            } else {
                Input::DerCertificate
            };
            return Err(header_err(kind, der_reason(&e)));
        }
    };
    let body_len = usize::try_from(header.length()).unwrap_or(usize::MAX);
    let total = header_len.saturating_add(body_len);
    let kind = match inner_tag(header_len) {
        Some(0x06) => Input::Pkcs7,
        Some(0x30) => Input::DerCertificate,
        Some(0x02) => return Err(integer_first(&bytes[header_len..])),
        None if body_len == 0 => {
            return Err(BundleError::UnknownFormat {
                hint: "an empty DER SEQUENCE".into(),
            });
        }
        None => Input::DerCertificate,
        Some(_) => {
            return Err(BundleError::UnknownFormat {
                hint: "a DER structure that is neither a certificate nor a PKCS#7 bundle".into(),
            });
        }
    };
    if total > bytes.len() {
        return Err(header_err(
            kind,
            format!(
                "truncated: the DER header announces {total} bytes but the file has only {}; \
                 the file was cut off, download or export it again",
                bytes.len()
            ),
        ));
    }
    if total < bytes.len() {
        let rest = &bytes[total..];
        if kind == Input::DerCertificate && starts_like_certificate(rest) {
            return Err(BundleError::UnknownFormat {
                hint: "several DER certificates concatenated back to back, which is not a \
                       supported format; convert each to PEM and concatenate the PEM files, or \
                       make a PKCS#7 bundle (openssl crl2pkcs7 -nocrl -certfile chain.pem)"
                    .into(),
            });
        }
        let extra = rest.len();
        return Err(match kind {
            Input::Pkcs7 => BundleError::BadPkcs7 {
                reason: format!("{extra} unexpected bytes after the end of the PKCS#7 structure"),
            },
            _ => BundleError::Certificate {
                index: 0,
                source: CertError::TrailingData { extra },
            },
        });
    }
    Ok(kind)
}

/// The outer TLV header of `bytes` and its encoded length.
fn outer_header(bytes: &[u8]) -> der::Result<(Header, usize)> {
    let mut reader = SliceReader::new(bytes)?;
    let header = Header::decode(&mut reader)?;
    Ok((header, usize::try_from(reader.position())?))
}

/// Whether `bytes` starts with a complete SEQUENCE whose first element is a SEQUENCE: the shape
/// of a certificate.
fn starts_like_certificate(bytes: &[u8]) -> bool {
    match outer_header(bytes) {
        Ok((h, n)) => h.tag() == Tag::Sequence && bytes.get(n) == Some(&0x30),
        Err(_) => false,
    }
}

/// Advice after a private key.
const KEY_ADVICE: &str = "keep private keys secret and upload only the certificate or chain";

/// The DER structure whose first element is an INTEGER (`body`, after the outer header): a
/// private key, or a PKCS#12 archive (version 3, RFC 7292 4).
fn integer_first(body: &[u8]) -> BundleError {
    if body.starts_with(&[0x02, 0x01, 0x03]) {
        BundleError::NotCertificate {
            found: "a PKCS#12 archive (.p12/.pfx), which holds a private key",
            advice: "export the certificates with `openssl pkcs12 -in FILE -nokeys`",
        }
    } else {
        BundleError::NotCertificate {
            found: "a private key in DER form",
            advice: KEY_ADVICE,
        }
    }
}

/// A decoder error in words, with the fix for BER indefinite lengths (CE1).
fn der_reason(e: &der::Error) -> String {
    match e.kind() {
        der::ErrorKind::IndefiniteLength => "it uses BER indefinite-length encoding, which is \
             not supported; convert it to DER (for a .p7b: `openssl pkcs7 -in FILE -inform DER \
             -outform DER -out FIXED.p7b`)"
            .into(),
        der::ErrorKind::Incomplete {
            expected_len,
            actual_len,
        } => format!(
            "truncated: {expected_len} bytes expected but only {actual_len} present; the file \
             was cut off"
        ),
        der::ErrorKind::TrailingData { decoded, remaining } => {
            format!("{remaining} unexpected bytes after the first {decoded}")
        }
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates.

/// Parses one DER certificate and appends it, enforcing [`MAX_CERTIFICATES`].
fn push_certificate(out: &mut Vec<Certificate>, der: &[u8]) -> Result<(), BundleError> {
    if out.len() >= MAX_CERTIFICATES {
        return Err(BundleError::TooManyCertificates {
            limit: MAX_CERTIFICATES,
        });
    }
    let index = out.len();
    out.push(
        Certificate::from_der(der).map_err(|source| BundleError::Certificate { index, source })?,
    );
    Ok(())
}

/// A whole DER file holding one certificate, or a well-formed object of another type: then
/// say which.
fn read_der_certificate(der: &[u8], out: &mut Vec<Certificate>) -> Result<(), BundleError> {
    push_certificate(out, der).map_err(|e| other_der_type(der).unwrap_or(e))
}

/// Names DER that is a well-formed CSR, CRL, public key or encrypted private key.
fn other_der_type(der: &[u8]) -> Option<BundleError> {
    let (found, advice) = if x509_cert::request::CertReq::from_der(der).is_ok() {
        (
            "a CSR (certificate signing request) in DER form",
            "upload the certificate the CA issued for it",
        )
    } else if x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
        .is_ok()
    {
        (
            "a CRL (certificate revocation list) in DER form",
            "upload the CA's certificate instead",
        )
    } else if spki::SubjectPublicKeyInfoRef::from_der(der).is_ok() {
        (
            "a bare public key (SubjectPublicKeyInfo) in DER form",
            "upload its certificate instead",
        )
    } else if pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).is_ok() {
        ("an encrypted private key in DER form", KEY_ADVICE)
    } else {
        return None;
    };
    Some(BundleError::NotCertificate { found, advice })
}

// ---------------------------------------------------------------------------------------------
// PEM.

/// One `-----BEGIN label-----` ... `-----END label-----` block.
struct PemBlock<'a> {
    label: &'a str,
    /// 1-based line of the BEGIN line.
    line: usize,
    /// The lines between BEGIN and END.
    body: Vec<&'a [u8]>,
}

/// Reads every block of a PEM file (CE1): certificates and PKCS#7 bundles are read, private keys
/// and EC parameters skipped without decoding, anything else is an error.
fn read_pem(bytes: &[u8], out: &mut Vec<Certificate>) -> Result<(), BundleError> {
    let mut keys = 0usize;
    for block in pem_blocks(bytes)? {
        match block.label {
            "CERTIFICATE" | "X509 CERTIFICATE" => push_certificate(out, &decode_block(&block)?)?,
            // OpenSSL's trusted certificate: the certificate, then trust settings (X509_AUX).
            "TRUSTED CERTIFICATE" => {
                let der = decode_block(&block)?;
                let cert = SliceReader::new(&der)
                    .and_then(|mut r| r.tlv_bytes())
                    .map_err(|e| BundleError::Certificate {
                        index: out.len(),
                        source: CertError::Malformed {
                            reason: der_reason(&e),
                        },
                    })?;
                push_certificate(out, cert)?;
            }
            "PKCS7" | "CMS" | "PKCS #7 SIGNED DATA" => read_pkcs7(&decode_block(&block)?, out)?,
            // Never decoded, never echoed: the key's bytes go nowhere (CE1).
            label if label.contains("PRIVATE KEY") => keys += 1,
            "EC PARAMETERS" => {}
            label => {
                return Err(BundleError::UnexpectedPemLabel {
                    label: label.into(),
                });
            }
        }
    }
    if out.is_empty() {
        let detail = if keys > 0 {
            "the PEM file holds a private key where certificates were expected; upload the \
             certificate (-----BEGIN CERTIFICATE-----) and keep the private key secret"
        } else {
            "the PEM file has no CERTIFICATE or PKCS7 block"
        };
        return Err(BundleError::NoCertificates {
            detail: detail.into(),
        });
    }
    Ok(())
}

/// Splits PEM text into its blocks; text outside blocks is ignored.
fn pem_blocks(bytes: &[u8]) -> Result<Vec<PemBlock<'_>>, BundleError> {
    let bad = |reason: String| BundleError::BadPem { reason };
    let mut blocks = Vec::new();
    let mut open: Option<PemBlock<'_>> = None;
    for (n, line) in lines(bytes) {
        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            let label = boundary_label(rest).ok_or_else(|| {
                bad(format!(
                    "line {n}: malformed BEGIN line; expected -----BEGIN LABEL-----"
                ))
            })?;
            if let Some(b) = open {
                return Err(bad(format!(
                    "the \"{}\" block beginning on line {} has no END line before the next \
                     BEGIN on line {n}",
                    b.label, b.line
                )));
            }
            open = Some(PemBlock {
                label,
                line: n,
                body: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix(b"-----END ") {
            let label = boundary_label(rest).ok_or_else(|| {
                bad(format!(
                    "line {n}: malformed END line; expected -----END LABEL-----"
                ))
            })?;
            let block = open
                .take()
                .ok_or_else(|| bad(format!("line {n}: END line without a BEGIN line")))?;
            if block.label != label {
                return Err(bad(format!(
                    "the \"{}\" block beginning on line {} ends with END \"{label}\" on line {n}",
                    block.label, block.line
                )));
            }
            blocks.push(block);
        } else if let Some(b) = open.as_mut() {
            b.body.push(line);
        }
    }
    if let Some(b) = open {
        return Err(bad(format!(
            "the \"{}\" block beginning on line {} has no -----END {}----- line; the file looks \
             truncated",
            b.label, b.line, b.label
        )));
    }
    Ok(blocks)
}

/// The label of a boundary line after `-----BEGIN ` / `-----END `: printable ASCII without
/// hyphens (RFC 7468 2), at most 64 characters, followed by `-----`.
fn boundary_label(rest: &[u8]) -> Option<&str> {
    let label = rest.strip_suffix(b"-----")?;
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .iter()
            .all(|&b| b == b' ' || (b.is_ascii_graphic() && b != b'-'));
    if ok {
        std::str::from_utf8(label).ok()
    } else {
        None
    }
}

/// Decodes a block's base64. Any line width and CR/LF endings are accepted: the base64 is
/// re-wrapped at 64 columns and handed to pem-rfc7468.
fn decode_block(block: &PemBlock<'_>) -> Result<Vec<u8>, BundleError> {
    let what = format!(
        "the \"{}\" block beginning on line {}",
        block.label, block.line
    );
    let b64: Vec<u8> = block
        .body
        .iter()
        .flat_map(|l| l.iter().copied())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if b64.is_empty() {
        return Err(BundleError::BadPem {
            reason: format!("{what} is empty"),
        });
    }
    if b64.contains(&b':') {
        return Err(BundleError::BadPem {
            reason: format!("{what} has RFC 1421 headers (e.g. Proc-Type), which are not allowed"),
        });
    }
    let mut canonical = format!("-----BEGIN {}-----\n", block.label).into_bytes();
    for chunk in b64.chunks(64) {
        canonical.extend_from_slice(chunk);
        canonical.push(b'\n');
    }
    canonical.extend_from_slice(format!("-----END {}-----\n", block.label).as_bytes());
    let (_, der) = pem_rfc7468::decode_vec(&canonical).map_err(|e| BundleError::BadPem {
        reason: format!("{what} is not valid base64 ({e}); the file may be truncated or edited"),
    })?;
    if der.is_empty() {
        return Err(BundleError::BadPem {
            reason: format!("{what} is empty"),
        });
    }
    Ok(der)
}

// ---------------------------------------------------------------------------------------------
// PKCS#7.

/// A whole TLV kept as its exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawTlv<'a>(&'a [u8]);

impl<'a> Decode<'a> for RawTlv<'a> {
    type Error = der::Error;
    fn decode<R: Reader<'a>>(reader: &mut R) -> der::Result<Self> {
        reader.tlv_bytes().map(RawTlv)
    }
}

impl Encode for RawTlv<'_> {
    fn encoded_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }
    fn encode(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.0)
    }
}

/// RFC 5652 5.1 `SignedData`, from the cms crate's own field types except `certificates` and
/// `crls`, which stay raw. cms's `CertificateSet` is a DER `SET OF`: it sorts the certificates
/// (losing the file's chain order, which openssl keeps), re-encodes them (fingerprints and
/// signatures need the exact bytes) and rejects attribute certificates (CE1 says to skip them).
#[derive(Sequence)]
struct SignedDataView<'a> {
    version: CmsVersion,
    digest_algorithms: DigestAlgorithmIdentifiers,
    encap_content_info: EncapsulatedContentInfo,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    certificates: Option<Vec<RawTlv<'a>>>,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    crls: Option<Vec<RawTlv<'a>>>,
    signer_infos: SignerInfos,
}

/// Reads the certificates of a DER PKCS#7 / CMS `ContentInfo` holding `SignedData` (CE1).
fn read_pkcs7(der: &[u8], out: &mut Vec<Certificate>) -> Result<(), BundleError> {
    let bad = |reason: String| BundleError::BadPkcs7 { reason };
    let info = ContentInfo::from_der(der).map_err(|e| bad(der_reason(&e)))?;
    if info.content_type != ID_SIGNED_DATA {
        let name = const_oid::db::DB
            .by_oid(&info.content_type)
            .unwrap_or("unknown");
        return Err(bad(format!(
            "its content type is {name} ({}), expected signedData ({ID_SIGNED_DATA}) holding \
             certificates",
            info.content_type
        )));
    }
    let signed: SignedDataView<'_> = info
        .content
        .decode_as()
        .map_err(|e| bad(format!("bad SignedData: {}", der_reason(&e))))?;
    let crls = signed.crls.map_or(0, |c| c.len());
    let certs = signed.certificates.unwrap_or_default();
    let mut found = 0usize;
    let mut skipped = 0usize;
    for RawTlv(tlv) in certs {
        // CertificateChoices (RFC 5652 10.2.2): a plain Certificate is a SEQUENCE; the other
        // choices ([0] extended, [1]/[2] attribute, [3] other) are context-tagged: skip them.
        if tlv.first() == Some(&0x30) {
            push_certificate(out, tlv)?;
            found += 1;
        } else {
            skipped += 1;
        }
    }
    if found == 0 {
        let detail = match (skipped, crls) {
            (0, 0) => "the PKCS#7 bundle's certificate list is empty".to_string(),
            (0, c) => format!("the PKCS#7 bundle holds only {c} CRL(s)"),
            (s, _) => format!(
                "the PKCS#7 bundle holds only {s} attribute or other non-X.509 certificate(s)"
            ),
        };
        return Err(BundleError::NoCertificates { detail });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ROOT: &str = include_str!("../../tests/data/bundle/root-p256.pem");
    const INT: &str = include_str!("../../tests/data/bundle/int-p256.pem");
    const LEAF: &str = include_str!("../../tests/data/bundle/leaf-p256.pem");
    const P384: &str = include_str!("../../tests/data/bundle/root-p384.pem");
    const RSA: &str = include_str!("../../tests/data/bundle/root-rsa.pem");
    const CHAIN: &str = include_str!("../../tests/data/bundle/chain-p256.pem");
    const LEAF_DER: &[u8] = include_bytes!("../../tests/data/bundle/leaf-p256.der");
    const P7B_PEM: &[u8] = include_bytes!("../../tests/data/bundle/chain-p256-pem.p7b");
    const P7B_DER: &[u8] = include_bytes!("../../tests/data/bundle/chain-p256-der.p7b");
    const P7B_CERTTOOL: &[u8] = include_bytes!("../../tests/data/bundle/chain-certtool.p7b");
    const PRINT_CERTS: &str = include_str!("../../tests/data/bundle/chain-print-certs.pem");
    const CSR_PEM: &str = include_str!("../../tests/data/bundle/leaf.csr.pem");
    const CSR_DER: &[u8] = include_bytes!("../../tests/data/bundle/leaf.csr.der");
    const CRL_PEM: &str = include_str!("../../tests/data/bundle/root.crl.pem");
    const CRL_DER: &[u8] = include_bytes!("../../tests/data/bundle/root.crl.der");

    fn der(pem: &str) -> CertificateDer {
        let certs = read_certificates(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        certs[0].der().clone()
    }

    fn chain() -> Vec<CertificateDer> {
        vec![der(LEAF), der(INT), der(ROOT)]
    }

    fn ders(certs: &[Certificate]) -> Vec<CertificateDer> {
        certs.iter().map(|c| c.der().clone()).collect()
    }

    fn cns(certs: &[Certificate]) -> Vec<String> {
        certs.iter().map(|c| c.common_name().unwrap()).collect()
    }

    fn err(bytes: &[u8]) -> BundleError {
        read_certificates(bytes).unwrap_err()
    }

    /// A fresh PKCS#8 private key PEM (generated, so no key is committed anywhere).
    fn key_pem() -> String {
        let k = crate::key::PrivateKey::generate(crate::key::KeySpec::P256).unwrap();
        k.to_pkcs8_pem().to_string()
    }

    #[test]
    fn detects_by_content() {
        assert_eq!(detect(CHAIN.as_bytes()), Ok(BundleFormat::Pem));
        assert_eq!(detect(P7B_PEM), Ok(BundleFormat::Pem));
        assert_eq!(detect(PRINT_CERTS.as_bytes()), Ok(BundleFormat::Pem));
        assert_eq!(detect(LEAF_DER), Ok(BundleFormat::Der));
        assert_eq!(detect(P7B_DER), Ok(BundleFormat::Pkcs7Der));
        assert_eq!(detect(P7B_CERTTOOL), Ok(BundleFormat::Pkcs7Der));
        assert_eq!(detect(b""), Err(BundleError::Empty));
        assert!(matches!(
            detect(b"garbage"),
            Err(BundleError::UnknownFormat { .. })
        ));
        // Leading whitespace, a BOM and CRLF line endings are fine.
        let crlf = format!("\u{feff}\r\n  \r\n{}", CHAIN.replace('\n', "\r\n"));
        assert_eq!(detect(crlf.as_bytes()), Ok(BundleFormat::Pem));
        assert_eq!(ders(&read_certificates(crlf.as_bytes()).unwrap()), chain());
    }

    #[test]
    fn reads_every_container_in_file_order() {
        let expect = chain();
        assert_eq!(ders(&read_certificates(CHAIN.as_bytes()).unwrap()), expect);
        assert_eq!(ders(&read_certificates(P7B_PEM).unwrap()), expect);
        assert_eq!(ders(&read_certificates(P7B_DER).unwrap()), expect);
        assert_eq!(
            ders(&read_certificates(PRINT_CERTS.as_bytes()).unwrap()),
            expect
        );
        assert_eq!(ders(&read_certificates(LEAF_DER).unwrap()), vec![der(LEAF)]);
        // certtool writes a DER-sorted SET OF: same certificates, its own order.
        let mut got = ders(&read_certificates(P7B_CERTTOOL).unwrap());
        let mut want = expect.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let certs = read_certificates(CHAIN.as_bytes()).unwrap();
        assert_eq!(
            cns(&certs),
            [
                "leaf.zone.example",
                "zonepki Test Intermediate",
                "zonepki Test Root P-256"
            ]
        );
    }

    #[test]
    fn reads_p384_and_rsa() {
        let both = format!("{P384}{RSA}");
        let certs = read_certificates(both.as_bytes()).unwrap();
        assert_eq!(
            cns(&certs),
            ["zonepki Test Root P-384", "zonepki Test Root RSA"]
        );
        let p7 = to_pkcs7_der(&ders(&certs));
        assert_eq!(read_certificates(&p7).unwrap(), certs);
    }

    #[test]
    fn mixed_pem_with_pkcs7_blocks_and_text_between() {
        let p7 = String::from_utf8(P7B_PEM.to_vec()).unwrap();
        let text = format!("Bag Attributes\nsubject=x\n{ROOT}\nsome words\n{p7}trailing text\n");
        let got = ders(&read_certificates(text.as_bytes()).unwrap());
        let mut want = vec![der(ROOT)];
        want.extend(chain());
        assert_eq!(got, want);
        for label in ["CMS", "PKCS #7 SIGNED DATA"] {
            let relabelled = p7.replace("PKCS7", label);
            assert_eq!(
                ders(&read_certificates(relabelled.as_bytes()).unwrap()),
                chain()
            );
        }
    }

    #[test]
    fn round_trips() {
        let certs = chain();
        let pem = to_pem(&certs);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n") && !pem.contains('\r'));
        assert_eq!(ders(&read_certificates(pem.as_bytes()).unwrap()), certs);
        let p7 = to_pkcs7_der(&certs);
        assert_eq!(detect(&p7), Ok(BundleFormat::Pkcs7Der));
        assert_eq!(ders(&read_certificates(&p7).unwrap()), certs);
        let p7pem = to_pkcs7_pem(&certs);
        assert!(p7pem.starts_with("-----BEGIN PKCS7-----\n"), "{p7pem}");
        assert_eq!(ders(&read_certificates(p7pem.as_bytes()).unwrap()), certs);
        // Same bytes as `openssl crl2pkcs7 -nocrl` for the same chain.
        assert_eq!(p7, P7B_DER);
        // Order is kept, also when it is not DER SET OF order.
        let reversed: Vec<_> = certs.iter().rev().cloned().collect();
        assert_eq!(
            ders(&read_certificates(&to_pkcs7_der(&reversed)).unwrap()),
            reversed
        );
    }

    #[test]
    fn empty_and_whitespace() {
        assert_eq!(err(b""), BundleError::Empty);
        assert_eq!(err(b" \n\t\r\n"), BundleError::Empty);
        assert!(err(b"").to_string().contains("empty"));
    }

    #[test]
    fn truncated_pem() {
        let cut = &CHAIN[..CHAIN.len() / 2];
        let e = err(cut.as_bytes());
        assert!(matches!(e, BundleError::BadPem { .. }), "{e:?}");
        assert!(
            e.to_string().contains("truncated") && e.to_string().contains("line"),
            "{e}"
        );
        // Cut inside the base64 of a block with its END line still there.
        let mut lines: Vec<&str> = LEAF.lines().collect();
        lines.remove(3);
        let e = err(lines.join("\n").as_bytes());
        assert!(
            matches!(
                e,
                BundleError::BadPem { .. } | BundleError::Certificate { .. }
            ),
            "{e}"
        );
        // BEGIN, then another BEGIN.
        let e = err(format!("-----BEGIN CERTIFICATE-----\nAAAA\n{LEAF}").as_bytes());
        assert!(matches!(e, BundleError::BadPem { .. }), "{e:?}");
        // END without BEGIN: not PEM at all.
        let e = err(b"x\n-----END CERTIFICATE-----\n");
        assert!(matches!(e, BundleError::UnknownFormat { .. }), "{e:?}");
        // END without BEGIN after a block, mismatched END, empty block, bad BEGIN line.
        for bad in [
            &format!("{LEAF}-----END CERTIFICATE-----\n"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PKCS7-----\n",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(err(bad.as_bytes()), BundleError::BadPem { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_base64() {
        let bad = LEAF.replacen("MII", "M*I", 1);
        let e = err(bad.as_bytes());
        assert!(matches!(e, BundleError::BadPem { .. }), "{e:?}");
        assert!(e.to_string().contains("base64"), "{e}");
        let headers = "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n\
                       -----END CERTIFICATE-----\n";
        assert!(matches!(
            err(headers.as_bytes()),
            BundleError::BadPem { .. }
        ));
        // Base64 that decodes, but not to a certificate.
        let e = err(b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n");
        assert!(
            matches!(e, BundleError::Certificate { index: 0, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn any_line_width_is_accepted() {
        let der = der(LEAF);
        let b64: String = LEAF.lines().filter(|l| !l.starts_with("-----")).collect();
        for width in [76, 40, 1000] {
            let body: Vec<String> = b64
                .as_bytes()
                .chunks(width)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                body.join("\n")
            );
            assert_eq!(
                ders(&read_certificates(pem.as_bytes()).unwrap()),
                vec![der.clone()]
            );
        }
    }

    #[test]
    fn truncated_der() {
        for cut in [1, 2, 10, LEAF_DER.len() / 2, LEAF_DER.len() - 1] {
            let e = err(&LEAF_DER[..cut]);
            assert!(
                matches!(e, BundleError::Certificate { index: 0, .. }),
                "{cut}: {e:?}"
            );
        }
        let e = err(&LEAF_DER[..LEAF_DER.len() - 1]);
        assert!(e.to_string().contains("truncated"), "{e}");
        // (Within the first 3 bytes nothing tells a PKCS#7 from a certificate.)
        for cut in [20, P7B_DER.len() / 2, P7B_DER.len() - 1] {
            let e = err(&P7B_DER[..cut]);
            assert!(matches!(e, BundleError::BadPkcs7 { .. }), "{cut}: {e:?}");
        }
    }

    #[test]
    fn garbage() {
        for bytes in [
            &b"hello world"[..],
            b"\x00\x01\x02\x03",
            b"\xff\xfe<\x00h\x00",
            b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
            &[0x30],
            &[0x30, 0x00],
            &[0x30, 0x03, 0x04, 0x01, 0x00],
        ] {
            let e = err(bytes);
            assert!(
                matches!(
                    e,
                    BundleError::UnknownFormat { .. } | BundleError::Certificate { index: 0, .. }
                ),
                "{bytes:?}: {e:?}"
            );
            assert!(!e.to_string().is_empty());
        }
        assert!(
            err(b"MIIBIjANBgkqhkiG9w0BAQEFAAOC")
                .to_string()
                .contains("base64")
        );
        assert!(err(b"\xff\xfe<\x00h\x00").to_string().contains("UTF-16"));
    }

    #[test]
    fn csr_is_not_a_certificate() {
        let e = err(CSR_PEM.as_bytes());
        assert_eq!(
            e,
            BundleError::UnexpectedPemLabel {
                label: "CERTIFICATE REQUEST".into()
            }
        );
        assert!(e.to_string().contains("CSR"), "{e}");
        let e = err(CSR_DER);
        assert!(matches!(e, BundleError::NotCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains("CSR"), "{e}");
    }

    #[test]
    fn crl_is_not_a_certificate() {
        let e = err(CRL_PEM.as_bytes());
        assert_eq!(
            e,
            BundleError::UnexpectedPemLabel {
                label: "X509 CRL".into()
            }
        );
        assert!(e.to_string().contains("CRL"), "{e}");
        let e = err(CRL_DER);
        assert!(matches!(e, BundleError::NotCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains("CRL"), "{e}");
    }

    #[test]
    fn keys_are_skipped_and_never_echoed() {
        let key = key_pem();
        let secret: String = key.lines().nth(1).unwrap().to_string();
        // Beside certificates: skipped.
        let with_cert = format!("{key}{LEAF}");
        assert_eq!(
            ders(&read_certificates(with_cert.as_bytes()).unwrap()),
            vec![der(LEAF)]
        );
        // Alone, under every key label: NoCertificates saying a key was found.
        for label in [
            "PRIVATE KEY",
            "EC PRIVATE KEY",
            "RSA PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
        ] {
            let only = key.replace("PRIVATE KEY", label);
            let e = err(only.as_bytes());
            assert!(matches!(e, BundleError::NoCertificates { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains("private key"), "{msg}");
            assert!(!msg.contains(&secret) && !format!("{e:?}").contains(&secret));
        }
        // A broken key block: the error names the label, not the content.
        let cut: String = key.lines().take(2).collect::<Vec<_>>().join("\n");
        let e = err(cut.as_bytes());
        assert!(matches!(e, BundleError::BadPem { .. }), "{e:?}");
        assert!(!e.to_string().contains(&secret));
        // DER PKCS#8 key.
        let k = crate::key::PrivateKey::generate(crate::key::KeySpec::P256).unwrap();
        let e = err(&k.to_pkcs8_der());
        assert!(matches!(e, BundleError::NotCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains("private key"));
    }

    #[test]
    fn other_labels_are_typed() {
        let pk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let e = err(pk.as_bytes());
        assert_eq!(
            e,
            BundleError::UnexpectedPemLabel {
                label: "PUBLIC KEY".into()
            }
        );
        assert!(e.to_string().contains("public key"));
    }

    #[test]
    fn too_large() {
        let big = vec![b' '; MAX_INPUT_LEN + 1];
        assert_eq!(
            err(&big),
            BundleError::TooLarge {
                len: big.len() as u64,
                limit: MAX_INPUT_LEN as u64
            }
        );
    }

    /// `depth` SEQUENCEs nested inside each other around `core`, with DER lengths.
    fn nested(depth: usize, core: &[u8]) -> Vec<u8> {
        let mut v = core.to_vec();
        for _ in 0..depth {
            let header = Header::new(Tag::Sequence, Length::try_from(v.len()).unwrap());
            let mut outer = header.to_der().unwrap();
            outer.extend_from_slice(&v);
            v = outer;
        }
        v
    }

    #[test]
    fn deeply_nested_input_is_a_typed_error() {
        let deep = nested(100_000, &[0x05, 0x00]);
        let e = err(&deep);
        assert!(
            matches!(e, BundleError::Certificate { index: 0, .. }),
            "{e:?}"
        );
        // Inside a PKCS#7 certificate list, and as PEM.
        let p7 = pkcs7_with(&[&nested(50_000, &[])], ID_SIGNED_DATA);
        let e = err(&p7);
        assert!(
            matches!(e, BundleError::Certificate { index: 0, .. }),
            "{e:?}"
        );
        let pem =
            pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &deep).unwrap();
        assert!(matches!(
            err(pem.as_bytes()),
            BundleError::Certificate { index: 0, .. }
        ));
    }

    #[test]
    fn thousands_of_blocks_are_bounded() {
        // Many key blocks and nothing else: skipped without decoding, then NoCertificates.
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let e = err(key.repeat(100_000).as_bytes());
        assert!(matches!(e, BundleError::NoCertificates { .. }), "{e:?}");
    }

    #[test]
    fn too_many_certificates() {
        let leaf = der(LEAF);
        let many = vec![leaf.clone(); MAX_CERTIFICATES + 1];
        let limit = BundleError::TooManyCertificates {
            limit: MAX_CERTIFICATES,
        };
        assert_eq!(err(to_pem(&many).as_bytes()), limit);
        assert_eq!(err(&to_pkcs7_der(&many)), limit);
        assert_eq!(
            read_certificates(&to_pkcs7_der(&many[1..])).unwrap().len(),
            MAX_CERTIFICATES
        );
    }

    #[test]
    fn trailing_garbage() {
        let mut der = LEAF_DER.to_vec();
        der.extend_from_slice(b"\x00\x00junk");
        let e = err(&der);
        assert_eq!(
            e,
            BundleError::Certificate {
                index: 0,
                source: CertError::TrailingData { extra: 6 }
            }
        );
        let mut p7 = P7B_DER.to_vec();
        p7.push(0);
        assert!(matches!(err(&p7), BundleError::BadPkcs7 { .. }));
        // Concatenated DER certificates: not supported, and the message says so.
        let two = [LEAF_DER, LEAF_DER].concat();
        let e = err(&two);
        assert!(matches!(e, BundleError::UnknownFormat { .. }), "{e:?}");
        assert!(e.to_string().contains("concatenated"), "{e}");
    }

    #[test]
    fn ber_indefinite_length_is_refused_clearly() {
        // The certs-only ContentInfo with indefinite outer lengths.
        let inner = &P7B_DER[4..];
        let mut ber = vec![0x30, 0x80];
        ber.extend_from_slice(inner);
        ber.extend_from_slice(&[0, 0]);
        let e = err(&ber);
        assert!(matches!(e, BundleError::BadPkcs7 { .. }), "{e:?}");
        assert!(e.to_string().contains("indefinite"), "{e}");
        let mut ber = vec![0x30, 0x80];
        ber.extend_from_slice(&LEAF_DER[4..]);
        ber.extend_from_slice(&[0, 0]);
        let e = err(&ber);
        assert!(e.to_string().contains("indefinite"), "{e}");
    }

    /// A SignedData with the given raw CertificateChoices.
    fn pkcs7_with(choices: &[&[u8]], content_type: der::asn1::ObjectIdentifier) -> Vec<u8> {
        let sd = SignedDataView {
            version: CmsVersion::V1,
            digest_algorithms: DigestAlgorithmIdentifiers::default(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            certificates: Some(choices.iter().map(|c| RawTlv(c)).collect()),
            crls: None,
            signer_infos: SignerInfos(Default::default()),
        };
        let content = Any::encode_from(&sd).unwrap();
        ContentInfo {
            content_type,
            content,
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn pkcs7_skips_attribute_certificates() {
        let leaf = der(LEAF);
        // [2] IMPLICIT AttributeCertificateV2 (contents irrelevant: skipped unparsed).
        let attr: &[u8] = &[0xA2, 0x03, 0x02, 0x01, 0x01];
        let p7 = pkcs7_with(&[attr, leaf.as_bytes(), attr], ID_SIGNED_DATA);
        assert_eq!(ders(&read_certificates(&p7).unwrap()), vec![leaf]);
        let e = err(&pkcs7_with(&[attr], ID_SIGNED_DATA));
        assert!(matches!(e, BundleError::NoCertificates { .. }), "{e:?}");
        assert!(e.to_string().contains("attribute"), "{e}");
        let e = err(&to_pkcs7_der(&[]));
        assert!(matches!(e, BundleError::NoCertificates { .. }), "{e:?}");
        // A broken certificate inside: its index is reported.
        let e = err(&pkcs7_with(
            &[der(ROOT).as_bytes(), &[0x30, 0x00]],
            ID_SIGNED_DATA,
        ));
        assert!(
            matches!(e, BundleError::Certificate { index: 1, .. }),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("certificate #2"), "{e}");
    }

    #[test]
    fn pkcs7_of_other_content_type() {
        let e = err(&pkcs7_with(&[der(LEAF).as_bytes()], ID_DATA));
        assert!(matches!(e, BundleError::BadPkcs7 { .. }), "{e:?}");
        assert!(e.to_string().contains("signedData"), "{e}");
    }

    #[test]
    fn a_pem_begin_line_inside_der_does_not_make_it_pem() {
        // DER with a PEM block in its trailing bytes is still judged as DER.
        let mut der = LEAF_DER.to_vec();
        der.extend_from_slice(format!("\n{ROOT}").as_bytes());
        assert!(matches!(
            err(&der),
            BundleError::Certificate { .. } | BundleError::BadPem { .. }
        ));
    }

    #[test]
    fn read_file_ignores_the_extension_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let contents: [&[u8]; 4] = [CHAIN.as_bytes(), LEAF_DER, P7B_PEM, P7B_DER];
        for ext in ["der", "cer", "crt", "p7b", "pem", "cert", "txt"] {
            for (i, c) in contents.iter().enumerate() {
                let p = dir.path().join(format!("f{i}.{ext}"));
                std::fs::write(&p, c).unwrap();
                assert!(!read_file(&p).unwrap().is_empty(), "{}", p.display());
            }
        }
        let missing = dir.path().join("missing.pem");
        let e = read_file(&missing).unwrap_err();
        assert!(
            matches!(&e, BundleError::File(f) if f.is_not_found()),
            "{e:?}"
        );
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = read_file(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::File(crate::fsio::FileError::IsADirectory { .. })
            ),
            "{e:?}"
        );
    }
}
