//! The rustls crypto provider of this process.
//!
//! reqwest is built with `rustls-no-provider` workspace-wide (HTTPS for
//! bot-runtime's live sources, with `ring` rather than aws-lc-rs), so a
//! `reqwest::Client` built without a provider panics in `build()`.
//! [`install_crypto_provider`] makes `ring` the process default: the
//! operator's `main` calls it first, and [`RuntimeClient`](crate::sync::client::RuntimeClient)
//! calls it before building its client, so embedders and tests need not.
//! (kube's own clients are given `ring` explicitly by its `ring` feature.)

use std::sync::Once;

/// Install `ring` as the process-default rustls provider, once; a provider
/// installed before (by anyone) is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is installed already: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_reqwest_client_builds_after_install() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let _ = reqwest::Client::builder().build().unwrap();
    }
}
