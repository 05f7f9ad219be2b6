//! TLS for the live sources' HTTPS: rustls with the `ring` crypto provider
//! (the one kube uses; aws-lc-rs is kept out of the static images), servers
//! verified against the system trust store.
//!
//! The trust store is read by `rustls-platform-verifier` (on Linux through
//! `rustls-native-certs`) when a client is built: the distribution's CA
//! bundle (the runtime image ships Debian's
//! `/etc/ssl/certs/ca-certificates.crt`), or, when set, **only** the PEM
//! file named by `SSL_CERT_FILE` and/or the directories in `SSL_CERT_DIR`
//! (colon-separated). A corporate TLS-intercepting proxy's CA therefore goes
//! into a bundle together with the public roots, and `SSL_CERT_FILE` names
//! that bundle.
//!
//! reqwest is built with `rustls-no-provider` workspace-wide, so any
//! `reqwest::Client` built without a preconfigured rustls config panics
//! unless a process-default provider is installed:
//! [`install_default_provider`] does that for other clients in a process
//! (tests, tools); [`client_config`] is what [`HttpSource`](super::HttpSource)
//! uses and needs no process state.

use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;
use rustls_platform_verifier::BuilderVerifierExt as _;

/// The `ring` crypto provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install `ring` as the process-default rustls provider, once; a provider
/// installed before (by anyone) is kept. Call before building a
/// `reqwest::Client` that is not given [`client_config`].
pub fn install_default_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is installed already: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A rustls client configuration: `ring`, the provider's safe protocol
/// versions (TLS 1.2 and 1.3), no client certificate, servers verified
/// against the system trust store (see the module docs for `SSL_CERT_FILE`).
///
/// # Errors
///
/// When no CA certificate could be loaded (e.g. `SSL_CERT_FILE` names a
/// missing or non-PEM file and nothing else is found): rustls's error, which
/// says so.
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth(),
    )
}
