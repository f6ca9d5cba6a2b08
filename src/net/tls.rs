//! Whom the client trusts and who it says it is: the crypto provider
//! (ring), the system's roots (loaded once, at the first handshake) or a
//! `ca_file`'s, `insecure_skip_verify`, a client certificate ([`Identity`]),
//! and the verifier that notes the peer certificate's expiry on the way.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::cert::cert_not_after;

use super::error::NetError;

/// A client certificate and its key (the key never printed).
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// Asks rustls now whether the key fits the certificate (at load time,
    /// not at the first check); the error is rustls'.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Identity, NetError> {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_root_certificates(RootCertStore::empty())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| NetError::Tls(e.to_string()))?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
        })
    }
}

impl PartialEq for Identity {
    fn eq(&self, o: &Self) -> bool {
        self.chain == o.chain && self.key.secret_der() == o.key.secret_der()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} certificate(s), key ***)", self.chain.len())
    }
}

/// How many of `certs` can be trust anchors (a `ca_file` with none is a
/// configuration problem).
pub fn usable_roots(certs: &[CertificateDer<'static>]) -> usize {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(certs.iter().cloned()).0
}

/// The TLS side of a client, built once per client: its verifier and its
/// identity. [`Trust::config`] makes a configuration per check.
pub struct Trust {
    insecure: bool,
    /// The verifier of `ca_file`; `None`: the system's roots (or insecure).
    custom: Option<Arc<WebPkiServerVerifier>>,
    identity: Option<Identity>,
}

impl Trust {
    /// No I/O: the system's roots are loaded at the first handshake.
    pub fn new(
        ca: Option<&[CertificateDer<'static>]>,
        insecure: bool,
        identity: Option<Identity>,
    ) -> Result<Trust, NetError> {
        let custom = match ca {
            Some(certs) if !insecure => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(certs.iter().cloned());
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(|e| NetError::CaFile(e.to_string()))?,
                )
            }
            _ => None,
        };
        Ok(Trust {
            insecure,
            custom,
            identity,
        })
    }

    /// A TLS configuration per check: its session cache starts empty, so
    /// each check does the full handshake a new client would. The peer
    /// certificate's notAfter lands in `not_after`.
    pub fn config(&self, not_after: Arc<AtomicI64>) -> Result<ClientConfig, NetError> {
        let inner = if self.insecure {
            None
        } else {
            match &self.custom {
                Some(v) => Some(v.clone()),
                None => Some(system_verifier()?),
            }
        };
        let p = provider();
        let capture = Capture {
            inner,
            algs: p.signature_verification_algorithms,
            not_after,
        };
        let builder = ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(capture));
        let mut cfg = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| NetError::ClientCertificate(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The verifier of the system's trust store, loaded once, on first use.
fn system_verifier() -> Result<Arc<WebPkiServerVerifier>, NetError> {
    static V: OnceLock<Result<Arc<WebPkiServerVerifier>, NetError>> = OnceLock::new();
    V.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(NetError::NoSystemRoots);
        }
        tracing::debug!(roots = added, "Loaded the system's CA certificates.");
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| NetError::Tls(e.to_string()))
    })
    .clone()
}

/// Verifies like `inner` (or not at all when insecure) and remembers the
/// leaf certificate's notAfter — also when verification then fails, so
/// that an expired certificate still shows when it expired.
#[derive(Debug)]
struct Capture {
    inner: Option<Arc<WebPkiServerVerifier>>,
    algs: WebPkiSupportedAlgorithms,
    not_after: Arc<AtomicI64>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(t) = cert_not_after(end_entity.as_ref()) {
            self.not_after.store(t, Ordering::Relaxed);
        }
        match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
