//! # zonepki
//!
//! The whole lifecycle of a management zone's PKI: one zone CA that Primary Servers,
//! satellites and managed devices trust, server certificates whose keys are generated on the
//! servers that use them, and (in the staged operations) changing, reminting and switching
//! all of it over at a scheduled time without stranding a device.
//!
//! The core is sans-IO: certificates, CSRs, issuing, chain validation and agents take their
//! inputs (including "now") as arguments and return values. I/O sits behind three traits —
//! [`store::Storage`] (versioned records, compare-and-swap transactions), [`clock::Clock`]
//! and [`transport::Transport`] — and only [`service`] uses them, so any frontend (a CLI, a
//! web console, a device agent) embeds the same rules.
//!
//! ## Example
//!
//! A zone with an internal CA whose key is generated on the first Primary Server's agent; a
//! second server enrols (its agent makes its key and CSR); its chain validates against the
//! zone CA.
//!
//! ```
//! use zonepki::clock::{ManualClock, Timestamp};
//! use zonepki::service::{InitInternal, NewServer, ZoneService};
//! use zonepki::store::MemoryStore;
//! use zonepki::transport::LoopbackTransport;
//! use zonepki::zone::ServerRole;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now: Timestamp = "2027-03-01T12:00:00Z".parse()?;
//! let zone = ZoneService::new(
//!     MemoryStore::new(),            // or store::RedbStore::create("zone.db")?
//!     LoopbackTransport::in_memory(), // agents in this process
//!     ManualClock::new(now),
//! );
//! // The CA's CN is the zone name; an ECDSA P-256 key; 10 years (1 to 10).
//! let ps1 = NewServer::new("ps1.acme.example".parse()?, ServerRole::Primary);
//! zone.init_internal(InitInternal::new("Acme", ps1).with_validity(10.try_into()?))?;
//! zone.add_server(NewServer::new("ps2.acme.example".parse()?, ServerRole::Primary))?;
//!
//! let chain = zone.server_chain(&"ps2.acme.example".parse()?)?;
//! let leaf = zonepki::cert::Certificate::try_from(&chain[0])?;
//! let ca = zone.ca_certificate()?;
//! let path = zonepki::chain::verify_chain(&leaf, &[], &[ca], now)?;
//! assert_eq!(path.subjects(), ["CN=ps2.acme.example", "CN=Acme"]);
//! assert_eq!(zone.ca_view()?.details.status.name(), "valid");
//! # Ok(())
//! # }
//! ```
//!
//! ## Modules
//! - [`cert`]: the certificate view (V1) and [`cert::bundle`] (PEM / DER / PKCS#7, CE1).
//! - [`key`]: key types (S2), PKCS#8, the [`key::Signer`] trait, signature checks.
//! - [`csr`]: PKCS#10 build and parse ([`csr::VerifiedCsr`]).
//! - [`ca`]: the zone CA and server certificate profiles (Z2, S3, S4).
//! - [`chain`]: RFC 5280 path validation ([`chain::VerifiedChain`], S7, CE3).
//! - [`zone`]: the zone, its members and records (Z1).
//! - [`agent`]: the member side (A1, S1); [`transport`]: reaching agents.
//! - [`store`], [`clock`], [`audit`] (S6), [`view`] (V1-V3), [`service`], [`error`].
//! - [`fsio`]: bounded reads and writes that never follow a symbolic link.
//!
//! Key types: ECDSA P-256 is the default. RSA 2048/3072/4096 is offered for
//! interoperability; the `rsa` crate carries advisory RUSTSEC-2023-0071 (a timing side channel
//! in private-key operations), one more reason to keep P-256.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod audit;
pub mod backup;
pub mod ca;
pub mod cert;
pub mod chain;
pub mod clock;
pub mod cmp;
pub mod csr;
pub mod error;
pub mod fsio;
pub mod key;
pub mod lint;
#[cfg(feature = "net")]
pub mod net;
pub mod ops;
pub mod protocol;
pub mod service;
pub mod store;
pub mod transport;
pub mod view;
pub mod zone;

pub use error::{Error, Result};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
