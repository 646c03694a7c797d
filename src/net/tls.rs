//! zoned's TLS (N3, N4, B1, B7): the rustls [`ServerConfig`] of the zone server, built from
//! the server member's own key and chain, with
//!
//! - a certificate resolver ([`ChainResolver`]) that serves each client a chain it can
//!   validate ([`select_chain`]): after a Remint CA or Change CA activation the server's chain
//!   is `[leaf, bridge]` (the bridge is the new CA certified by the old one, B1); a client that
//!   names the new CA in the TLS 1.3 `certificate_authorities` extension gets the plain chain,
//!   any other client the bridged one, which validates for a member trusting either CA;
//! - a client-certificate verifier ([`AuditingVerifier`]) over rustls' webpki verifier, whose
//!   roots are the zone's accepted client anchors (the current CA, a running operation's
//!   future CA, retired CAs still trusted, N4/B7). A client may connect without a certificate
//!   (enrolment, the CA certificates, health and the admin API need none; the agent API
//!   refuses such a request itself); a certificate that does not verify aborts the handshake
//!   and is reported as a [`Refusal`] to a [`RefusalSink`], so every refusal is audited (N3).
//!
//! The chain is read at each handshake, so a new certificate is served from the next
//! handshake on without a restart; new client anchors build a new [`ServerConfig`], which
//! each accepted connection takes as it starts ([`ServerTls::config`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use der::Encode as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{self, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tokio::sync::mpsc;

use crate::cert::{Certificate, CertificateDer};
use crate::key::PrivateKey;
use crate::service::Refusal;

/// Why zoned's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server member has no certificate yet.
    #[error(
        "member {member} has no certificate and key to serve TLS with: enrol it (or restore its \
         member directory) first"
    )]
    NoCertificate {
        /// The member.
        member: String,
    },
    /// rustls refused the key, the chain or the anchors.
    #[error("the TLS configuration was refused: {reason}")]
    Rustls {
        /// rustls' reason.
        reason: String,
    },
    /// The zone has no CA certificate to accept client certificates from.
    #[error(
        "the zone has no CA certificates to accept client certificates from: is the store a \
         zone's store?"
    )]
    NoClientAnchors,
}

fn rustls_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Rustls {
        reason: e.to_string(),
    }
}

/// The crypto provider of zoned and its clients: *ring* (README "Dependencies" says why).
///
/// rustls 0.23.48 deprecates *ring*'s provider for its lack of post-quantum key exchange; the
/// feature `net` chose *ring* (a C compiler but no cmake or Go, unlike aws-lc-rs; fast P-256) and accepts that.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A zonepki certificate as rustls' type.
pub fn to_rustls(cert: &CertificateDer) -> pki_types::CertificateDer<'static> {
    pki_types::CertificateDer::from(cert.as_bytes().to_vec())
}

/// The member a TLS peer authenticated as ([`crate::service::credential_member`]): a server
/// certificate's FQDN (its first SAN dNSName), or else the subject common name (a device's
/// client credential), folded the way the zone keys members. `None` for a certificate that
/// does not parse or names no member. Only meaningful for a certificate the client verifier
/// accepted.
pub fn peer_member(cert: &[u8]) -> Option<String> {
    crate::service::credential_member(&Certificate::from_der(cert).ok()?)
}

/// The DER of a certificate's subject name, as the TLS `certificate_authorities` extension
/// carries it (with its outer SEQUENCE, like rustls' [`DistinguishedName`]).
fn subject_der(cert: &Certificate) -> Option<Vec<u8>> {
    cert.subject_name().to_der().ok()
}

fn issuer_der(cert: &Certificate) -> Option<Vec<u8>> {
    cert.issuer_name().to_der().ok()
}

/// Whether `cert` is signed by its own key (a root, not a bridge: a bridge may carry the same
/// name as its issuer, since a Remint CA keeps the zone's name, so names cannot tell).
fn self_signed(cert: &Certificate) -> bool {
    let Some(signature) = cert.signature() else {
        return false;
    };
    crate::key::verify_signature(
        cert.public_key(),
        cert.signature_algorithm(),
        cert.tbs_der(),
        signature,
    )
    .is_ok()
}

/// The two chains a server may serve, worked out once per chain (not per handshake).
#[derive(Debug, Clone)]
struct ChainChoice {
    /// The chain as the member holds it (with the bridge, if any).
    full: Vec<CertificateDer>,
    /// With a bridge at the end: the chain without it, and the bridge's subject (the new CA)
    /// when it differs from its issuer's name (the old CA). With equal names a client's
    /// `certificate_authorities` cannot say which CA it trusts, and the bridged chain, which
    /// validates for both, is served.
    plain: Option<(Vec<CertificateDer>, Option<Vec<u8>>)>,
}

impl ChainChoice {
    fn new(chain: &[CertificateDer]) -> Self {
        let full = chain.to_vec();
        let plain = (|| {
            let (last, rest) = chain.split_last()?;
            let prev = rest.last()?;
            let last = Certificate::from_der(last.as_bytes()).ok()?;
            let prev = Certificate::from_der(prev.as_bytes()).ok()?;
            // A bridge: issued by another key than its own, and the issuer of the certificate
            // before it (the chain ends at an anchor otherwise, B1).
            if self_signed(&last) || issuer_der(&prev)? != subject_der(&last)? {
                return None;
            }
            let new_ca = subject_der(&last)?;
            let distinct = (issuer_der(&last)? != new_ca).then_some(new_ca);
            Some((rest.to_vec(), distinct))
        })();
        ChainChoice { full, plain }
    }

    fn select(&self, client_trusts: Option<&[DistinguishedName]>) -> Selected {
        match (&self.plain, client_trusts) {
            (Some((_, Some(new_ca))), Some(names))
                if names.iter().any(|n| n.as_ref() == new_ca.as_slice()) =>
            {
                Selected::Plain
            }
            (Some(_), _) => Selected::Bridged,
            (None, _) => Selected::Full,
        }
    }
}

/// Which chain a handshake got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    /// No bridge in the chain: the chain as it is.
    Full,
    /// The chain without the bridge, for a client naming the new CA.
    Plain,
    /// The chain with the bridge.
    Bridged,
}

/// N4, B1: the chain to serve a client, given the server's chain (leaf first, as
/// [`crate::agent::Agent::chain`] holds it) and the CAs the client named in its TLS 1.3
/// `certificate_authorities` extension, if it sent one (rustls clients send their verifier's
/// root hints; OpenSSL sends none).
///
/// - A chain that ends at a self-signed CA has no bridge: it is served as it is.
/// - A chain that ends with a bridge (the new CA certified by the old one, after a Remint CA or
///   Change CA activation): a client that names the new CA gets the plain chain (without the
///   bridge); a client that names only the old CA, or nothing, gets the chain with the bridge,
///   which a member trusting either CA validates (trusted-first path building). When the old
///   and the new CA have the same name (a Remint CA keeps the zone's name), a name cannot tell
///   which CA a client trusts, and the chain with the bridge is served.
pub fn select_chain(
    chain: &[CertificateDer],
    client_trusts: Option<&[DistinguishedName]>,
) -> Vec<CertificateDer> {
    let choice = ChainChoice::new(chain);
    match choice.select(client_trusts) {
        Selected::Plain => choice.plain.map(|(c, _)| c).unwrap_or(choice.full),
        Selected::Full | Selected::Bridged => choice.full,
    }
}

/// What the resolver serves now: the chain's choice and the rustls keys for each chain.
#[derive(Debug)]
struct Served {
    choice: ChainChoice,
    full: Arc<CertifiedKey>,
    plain: Option<Arc<CertifiedKey>>,
}

/// How many handshakes got each chain (for `/metrics` and tests).
#[derive(Debug, Default)]
pub struct ChainCounts {
    /// Chains without a bridge served as they are.
    pub full: AtomicU64,
    /// Plain chains served to clients naming the new CA.
    pub plain: AtomicU64,
    /// Chains with the bridge.
    pub bridged: AtomicU64,
}

/// The [`ResolvesServerCert`] of zoned: the server member's chain, read at each handshake,
/// chosen per client by [`select_chain`]'s rule (N4, B1).
#[derive(Debug)]
pub struct ChainResolver {
    served: RwLock<Arc<Served>>,
    counts: ChainCounts,
}

impl ChainResolver {
    fn served(
        key: &PrivateKey,
        chain: &[CertificateDer],
        member: &str,
    ) -> Result<Served, TlsError> {
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                member: member.to_string(),
            });
        }
        let der = key.to_pkcs8_der();
        let signing = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(der.as_slice()),
        ))
        .map_err(rustls_err)?;
        let choice = ChainChoice::new(chain);
        let certified = |chain: &[CertificateDer]| -> Result<Arc<CertifiedKey>, TlsError> {
            let ck = CertifiedKey::new(chain.iter().map(to_rustls).collect(), signing.clone());
            ck.keys_match().map_err(rustls_err)?;
            Ok(Arc::new(ck))
        };
        let full = certified(&choice.full)?;
        let plain = match &choice.plain {
            Some((plain, Some(_))) => Some(certified(plain)?),
            _ => None,
        };
        Ok(Served {
            choice,
            full,
            plain,
        })
    }

    /// The chain served to a client without `certificate_authorities` (the full chain).
    pub fn chain(&self) -> Vec<CertificateDer> {
        self.read().choice.full.clone()
    }

    /// How many handshakes got each chain.
    pub fn counts(&self) -> &ChainCounts {
        &self.counts
    }

    fn read(&self) -> Arc<Served> {
        match self.served.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for ChainResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.read();
        let selected = served.choice.select(client_hello.certificate_authorities());
        let (counter, key) = match (selected, &served.plain) {
            (Selected::Plain, Some(plain)) => (&self.counts.plain, plain),
            (Selected::Bridged, _) => (&self.counts.bridged, &served.full),
            _ => (&self.counts.full, &served.full),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(key.clone())
    }
}

/// Where TLS and HTTP refusals go to be audited: a bounded channel drained by zoned's audit
/// task (which rate-limits per peer). When the channel is full the refusal is counted as
/// suppressed and dropped, so a flood of bad handshakes cannot grow memory or the audit log
/// without bound.
#[derive(Debug, Clone)]
pub struct RefusalSink {
    tx: mpsc::Sender<Refusal>,
    suppressed: Arc<AtomicU64>,
}

impl RefusalSink {
    /// A sink holding up to `capacity` refusals, and its receiving end.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Refusal>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            RefusalSink {
                tx,
                suppressed: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Hands a refusal to the audit task; never blocks.
    pub fn report(&self, refusal: Refusal) {
        if self.tx.try_send(refusal).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals dropped because the channel was full (or closed).
    pub fn dropped(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    /// The peer of the connection whose handshake is running, for the verifier's refusals
    /// (rustls calls the verifier inside the handshake, which zoned polls in the connection's
    /// task).
    pub static PEER: SocketAddr;
}

/// rustls' webpki client verifier, reporting every certificate it refuses to a
/// [`RefusalSink`] (`what` = `tls`, the certificate's claimed member, the peer when known
/// through [`PEER`], and rustls' reason).
#[derive(Debug)]
pub struct AuditingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sink: RefusalSink,
}

impl AuditingVerifier {
    /// Accepts client certificates issued by one of `anchors` (mandatory only where the
    /// application asks: a client may connect without one).
    pub fn new(
        anchors: &[CertificateDer],
        sink: RefusalSink,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for a in anchors {
            roots.add(to_rustls(a)).map_err(rustls_err)?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoClientAnchors);
        }
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(rustls_err)?;
        Ok(AuditingVerifier { inner, sink })
    }
}

impl ClientCertVerifier for AuditingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &pki_types::CertificateDer<'_>,
        intermediates: &[pki_types::CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                let mut refusal = Refusal::new(
                    "tls",
                    format!("client certificate refused in the TLS handshake: {e}"),
                );
                if let Some(name) = peer_member(end_entity) {
                    refusal = refusal.claimed(name);
                }
                if let Ok(peer) = PEER.try_with(|p| *p) {
                    refusal = refusal.peer(peer.to_string());
                }
                self.sink.report(refusal);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// zoned's TLS: the current [`ServerConfig`], rebuilt when the accepted client anchors
/// change; the served chain follows the member's chain without a rebuild.
#[derive(Debug)]
pub struct ServerTls {
    member: String,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ChainResolver>,
    sink: RefusalSink,
    session_storage: Arc<dyn rustls::server::StoresServerSessions>,
    current: RwLock<(Vec<CertificateDer>, Arc<ServerConfig>)>,
}

impl ServerTls {
    /// TLS for `member` with its `key` and `chain` (leaf first), accepting client certificates
    /// from `anchors`, reporting refused ones to `sink`. TLS 1.3 and 1.2.
    pub fn new(
        member: &str,
        key: &PrivateKey,
        chain: &[CertificateDer],
        anchors: &[CertificateDer],
        sink: RefusalSink,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let resolver = Arc::new(ChainResolver {
            served: RwLock::new(Arc::new(ChainResolver::served(key, chain, member)?)),
            counts: ChainCounts::default(),
        });
        let session_storage: Arc<dyn rustls::server::StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(4096);
        let config = Self::build(&provider, &resolver, &sink, &session_storage, anchors)?;
        Ok(ServerTls {
            member: member.to_string(),
            provider,
            resolver,
            sink,
            session_storage,
            current: RwLock::new((anchors.to_vec(), config)),
        })
    }

    fn build(
        provider: &Arc<CryptoProvider>,
        resolver: &Arc<ChainResolver>,
        sink: &RefusalSink,
        session_storage: &Arc<dyn rustls::server::StoresServerSessions>,
        anchors: &[CertificateDer],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = AuditingVerifier::new(anchors, sink.clone(), provider.clone())?;
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(rustls_err)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(resolver.clone());
        config.session_storage = session_storage.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The configuration a new connection uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(g) => g.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// The certificate resolver (the served chain, and how often each chain was served).
    pub fn resolver(&self) -> &ChainResolver {
        &self.resolver
    }

    /// The server's key and chain changed (a new certificate at activation, say): served from
    /// the next handshake on. Returns whether the chain differs from the one served.
    pub fn set_identity(
        &self,
        key: &PrivateKey,
        chain: &[CertificateDer],
    ) -> Result<bool, TlsError> {
        if self.resolver.read().choice.full == chain {
            return Ok(false);
        }
        let served = Arc::new(ChainResolver::served(key, chain, &self.member)?);
        match self.resolver.served.write() {
            Ok(mut g) => *g = served,
            Err(poisoned) => *poisoned.into_inner() = served,
        }
        Ok(true)
    }

    /// The zone's accepted client anchors changed (an operation started or activated, an old
    /// CA retired, N4/B7): new connections use a configuration with these. Returns whether
    /// they differ from the current ones.
    pub fn set_client_anchors(&self, anchors: &[CertificateDer]) -> Result<bool, TlsError> {
        let same = match self.current.read() {
            Ok(g) => g.0 == anchors,
            Err(poisoned) => poisoned.into_inner().0 == anchors,
        };
        if same {
            return Ok(false);
        }
        let config = Self::build(
            &self.provider,
            &self.resolver,
            &self.sink,
            &self.session_storage,
            anchors,
        )?;
        let next = (anchors.to_vec(), config);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaParams, Serial};
    use crate::clock::Timestamp;
    use crate::key::KeySpec;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// An old CA, a new CA (named `new_cn`), the bridge (new CA's key certified by the old
    /// CA), and a leaf issued by the new CA.
    struct Rollover {
        old: CertificateDer,
        new: CertificateDer,
        bridge: CertificateDer,
        leaf: CertificateDer,
    }

    fn rollover(old_cn: &str, new_cn: &str) -> Rollover {
        let now = t("2027-01-01T00:00:00Z");
        let params = |cn: &str| CaParams {
            common_name: cn.into(),
            validity: 5.try_into().unwrap(),
        };
        let old_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let old =
            crate::ca::self_signed_ca(&old_key, &params(old_cn), &Serial::random().unwrap(), now)
                .unwrap();
        let new_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let new =
            crate::ca::self_signed_ca(&new_key, &params(new_cn), &Serial::random().unwrap(), now)
                .unwrap();
        let bridge =
            crate::ca::cross_certify(&old, &old_key, &new, &Serial::random().unwrap(), now)
                .unwrap();
        let leaf_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = crate::csr::build_csr(
            &crate::csr::CsrRequest::default_for("ps1.zone.example"),
            &leaf_key,
        )
        .unwrap();
        let csr = crate::csr::VerifiedCsr::from_der(csr.as_bytes()).unwrap();
        let profile = crate::ca::ServerProfile {
            fqdn: "ps1.zone.example".into(),
            common_name: None,
            dns_names: Vec::new(),
            include_dns: false,
            not_after: None,
        };
        let leaf = crate::ca::issue_server_certificate(
            &new,
            &new_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            now,
        )
        .unwrap()
        .der()
        .clone();
        Rollover {
            old: old.der().clone(),
            new: new.der().clone(),
            bridge: bridge.der().clone(),
            leaf,
        }
    }

    fn dn(cert: &CertificateDer) -> DistinguishedName {
        let c = Certificate::from_der(cert.as_bytes()).unwrap();
        DistinguishedName::from(subject_der(&c).unwrap())
    }

    #[test]
    fn a_chain_without_a_bridge_is_served_as_it_is() {
        let r = rollover("Old Zone", "New Zone");
        let chain = vec![r.leaf.clone(), r.new.clone()];
        for names in [None, Some(vec![dn(&r.new)]), Some(vec![dn(&r.old)])] {
            assert_eq!(select_chain(&chain, names.as_deref()), chain);
        }
    }

    #[test]
    fn a_client_naming_the_new_ca_gets_the_plain_chain() {
        let r = rollover("Old Zone", "New Zone");
        let chain = vec![r.leaf.clone(), r.bridge.clone()];
        let names = [dn(&r.new)];
        assert_eq!(select_chain(&chain, Some(&names)), vec![r.leaf.clone()]);
        // Naming both: it trusts the new CA.
        let names = [dn(&r.old), dn(&r.new)];
        assert_eq!(select_chain(&chain, Some(&names)), vec![r.leaf.clone()]);
    }

    #[test]
    fn a_client_naming_only_the_old_ca_gets_the_bridge() {
        let r = rollover("Old Zone", "New Zone");
        let chain = vec![r.leaf.clone(), r.bridge.clone()];
        let names = [dn(&r.old)];
        assert_eq!(select_chain(&chain, Some(&names)), chain);
    }

    #[test]
    fn a_client_naming_nothing_gets_the_bridge() {
        let r = rollover("Old Zone", "New Zone");
        let chain = vec![r.leaf.clone(), r.bridge.clone()];
        assert_eq!(select_chain(&chain, None), chain);
        assert_eq!(select_chain(&chain, Some(&[])), chain);
    }

    /// A Remint CA keeps the zone's name: the old and the new CA have the same name, which
    /// cannot tell a client trusting the new CA from one trusting only the old; both
    /// validate the chain with the bridge.
    #[test]
    fn same_named_cas_get_the_bridge_whatever_the_client_names() {
        let r = rollover("Zone", "Zone");
        let chain = vec![r.leaf.clone(), r.bridge.clone()];
        let names = [dn(&r.new)];
        assert_eq!(select_chain(&chain, Some(&names)), chain);
        assert_eq!(select_chain(&chain, None), chain);
    }

    #[test]
    fn the_member_of_a_certificate_is_its_fqdn_or_else_its_common_name() {
        let r = rollover("Old Zone", "New Zone");
        assert_eq!(
            peer_member(r.leaf.as_bytes()).as_deref(),
            Some("ps1.zone.example")
        );
        assert_eq!(peer_member(r.old.as_bytes()).as_deref(), Some("old zone"));
        assert_eq!(peer_member(b"not a certificate"), None);
    }
}
