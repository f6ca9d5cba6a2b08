//! What can be wrong with a URL, a pattern, a proxy or a TLS set-up before
//! any request is sent. Messages never quote the URL itself: it may hold
//! credentials.

/// A setting of the network layer that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("not a URL ({0})")]
    NotAUrl(String),
    #[error("unsupported scheme `{0}`")]
    Scheme(String),
    #[error("the URL has no scheme")]
    NoScheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("credentials in the URL would leak into logs")]
    Credentials,
    #[error("a pattern starts with http:// or https://")]
    PatternScheme,
    #[error("unclosed [ in the host")]
    UnclosedBracket,
    #[error("invalid host `{0}`")]
    Host(String),
    #[error("invalid port `{0}`")]
    Port(String),
    #[error("{0}")]
    Pattern(String),
    #[error("the proxy is not a URL")]
    ProxyNotAUrl,
    #[error("only http:// proxies are supported (CONNECT is used for https targets)")]
    ProxyScheme,
    #[error("the proxy URL has no host")]
    ProxyNoHost,
    #[error("the proxy credentials cannot be sent")]
    ProxyCredentials,
    #[error("an http probe needs a url")]
    NoUrl,
    #[error(
        "no trusted CA certificates found on this system (install ca-certificates, or set ca_file)"
    )]
    NoSystemRoots,
    #[error("ca_file: {0}")]
    CaFile(String),
    #[error("client certificate: {0}")]
    ClientCertificate(String),
    #[error("{0}")]
    Tls(String),
}
