//! The operator's error type.

/// Anything a reconcile can fail with.
///
/// Problems in what the user declared (a missing account, insufficient
/// funds, an invalid spec) are not errors: they are reported in the
/// resource's status and Events. These variants are failures to talk to the
/// API server or to build what the user asked for; the controller retries
/// them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer, or the cleanup behind it, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A child object could not be built.
    #[error("building children: {0}")]
    Build(#[from] crate::builders::BuildError),
    /// The object has no namespace or name (all paperbot resources are namespaced).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    /// A status or child could not be serialized.
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// Bounded label for the `category` of the reconcile-error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            // An error of the reconcile behind the finalizer keeps its own category.
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "finalizer",
            },
            Error::Build(_) => "build",
            Error::MissingMetadata(_) => "invalid_object",
            Error::Serialize(_) => "serialize",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_wrapped_errors_keep_their_category() {
        let inner = Error::MissingMetadata("namespace");
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            inner,
        )));
        assert_eq!(wrapped.metric_label(), "invalid_object");
        let bare = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject));
        assert_eq!(bare.metric_label(), "finalizer");
    }
}
