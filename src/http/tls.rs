//! TLS for depwatch's own server (`web.tls_server_config`), by rustls:
//! TLS 1.2 and 1.3 only, the exporter-toolkit's client certificate modes,
//! `client_allowed_sans`, cipher suites and curves by their Go names.
//!
//! The certificate, key and client CA files are re-read when they change
//! (looked at no more than once a second, at a handshake), so a rotated
//! certificate is served without a restart; a rotation that leaves a broken
//! pair behind keeps the last good one and says so in the log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::config::web::{ClientAuth, PemSource, TlsServer, TlsVersion};

/// How often the files are looked at for a change, at most.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Builds the server configuration of each handshake, from files that may
/// change underneath.
pub struct Tls {
    cfg: TlsServer,
    state: Mutex<Loaded>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

fn files(cfg: &TlsServer) -> Vec<PathBuf> {
    let mut f = Vec::new();
    for s in [&cfg.cert, &cfg.key] {
        if let PemSource::File(p) = s {
            f.push(p.clone());
        }
    }
    f.extend(cfg.client_ca_file.clone());
    f
}

fn stamps(cfg: &TlsServer) -> Vec<Option<(SystemTime, u64)>> {
    files(cfg)
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl Tls {
    /// Loads the files now: a configuration that cannot serve is an error
    /// at start (and at reload), never a server that fails every handshake.
    pub fn new(cfg: &TlsServer) -> Result<Tls, TlsError> {
        let config = build(cfg)?;
        Ok(Tls {
            cfg: cfg.clone(),
            state: Mutex::new(Loaded {
                config,
                stamps: stamps(cfg),
                checked: Instant::now(),
            }),
        })
    }

    /// The TLS server of a web configuration, `None` without TLS.
    pub fn of(web: &crate::config::web::WebConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        web.tls
            .as_ref()
            .map(|t| Tls::new(t).map(Arc::new))
            .transpose()
    }

    pub fn settings(&self) -> &TlsServer {
        &self.cfg
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            let now = stamps(&self.cfg);
            if now != st.stamps {
                match build(&self.cfg) {
                    Ok(c) => {
                        tracing::info!("TLS certificate or key changed: serving the new one.");
                        st.config = c;
                        st.stamps = now;
                    }
                    Err(e) => {
                        // Half-written rotation, most likely: try again later.
                        tracing::warn!(error = %e, "TLS files changed but cannot be used; serving the previous certificate.");
                    }
                }
            }
        }
        st.config.clone()
    }
}

fn read(p: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    crate::config::read_bounded(p, 1 << 20)
        .map_err(|e| TlsError(format!("cannot read {}: {e}", p.display())))?
        .ok_or_else(|| TlsError(format!("{} is larger than 1 MiB", p.display())))
}

fn pem(src: &PemSource) -> Result<(Vec<u8>, String), TlsError> {
    match src {
        PemSource::File(p) => Ok((read(p)?, p.display().to_string())),
        PemSource::Inline(s) => Ok((s.expose().as_bytes().to_vec(), "the inline PEM".into())),
    }
}

fn build(cfg: &TlsServer) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_pem, cert_from) = pem(&cfg.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{cert_from}: not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{cert_from}: no certificate in it")));
    }
    let (key_pem, key_from) = pem(&cfg.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError(format!("{key_from}: no private key in it: {e}")))?;

    let mut provider = rustls::crypto::ring::default_provider();
    if !cfg.cipher_suites.is_empty() {
        provider.cipher_suites.retain(|s| {
            cfg.cipher_suites
                .iter()
                .any(|n| suite_matches(n, s.suite()))
        });
    }
    if !cfg.curve_preferences.is_empty() {
        let order: Vec<_> = cfg
            .curve_preferences
            .iter()
            .filter_map(|n| {
                provider
                    .kx_groups
                    .iter()
                    .find(|g| curve_matches(n, g.name()))
                    .copied()
            })
            .collect();
        provider.kx_groups = order;
    }
    let provider = Arc::new(provider);
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if cfg.min_version <= TlsVersion::Tls12 && cfg.max_version >= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if cfg.max_version >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError(format!("TLS versions and cipher suites do not fit: {e}")))?;
    let builder = match cfg.client_auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: cfg.client_auth == ClientAuth::RequireAnyClientCert,
                algs: provider.signature_verification_algorithms,
            })),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some(ca) = &cfg.client_ca_file else {
                return Err(TlsError("client_ca_file is needed".into()));
            };
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?
            {
                let c = c.map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
            }
            let mut v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if cfg.client_auth == ClientAuth::VerifyClientCertIfGiven {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| TlsError(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "{cert_from} and {key_from} do not make a pair: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn suite_matches(go: &str, s: rustls::CipherSuite) -> bool {
    let name = format!("{s:?}");
    let go = go.trim_end_matches("_SHA256");
    // rustls: TLS13_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 …
    let rustls = name.trim_end_matches("_SHA256").replace("TLS13_", "TLS_");
    rustls == go
}

fn curve_matches(go: &str, g: rustls::NamedGroup) -> bool {
    matches!(
        (go, g),
        ("X25519", rustls::NamedGroup::X25519)
            | ("CurveP256", rustls::NamedGroup::secp256r1)
            | ("CurveP384", rustls::NamedGroup::secp384r1)
    )
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked
/// for (or required) but not checked against a CA, as in Go; the handshake
/// signature still proves the client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// Whether a verified client certificate carries one of `allowed` among
/// its DNS or IP subject alternative names.
pub fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    allowed.iter().any(|name| {
        ServerName::try_from(name.as_str())
            .ok()
            .is_some_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
    })
}
