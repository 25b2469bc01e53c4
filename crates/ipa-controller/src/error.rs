//! The controller's one error type.

/// Everything that can go wrong in the controller. Messages are lowercase and never repeat their source; the
/// `category()` is a stable, low-cardinality metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api call failed: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("could not build a kubernetes client")]
    KubeConfig(#[source] kube::Error),
    #[error("prometheus query failed: {0}")]
    Prometheus(String),
    #[error("agent request failed: {0}")]
    Agent(String),
    #[error("agent reply was invalid: {0}")]
    AgentReply(String),
    #[error("could not serialise yaml: {0}")]
    Yaml(String),
    #[error("invalid url {url:?}")]
    Url { url: String },
    #[error("invalid controller configuration: {0}")]
    Config(String),
    #[error("invalid IPA {name}: {reason}")]
    InvalidSpec { name: String, reason: String },
    #[error("could not serve metrics on {addr}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("leader election failed")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    #[error("lost leadership; exiting so another replica takes over")]
    LostLeadership,
    #[error("could not build an http client")]
    Http(#[source] reqwest::Error),
    #[error("admission webhook certificates: {0}")]
    Certificate(String),
}

impl Error {
    /// A stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::KubeConfig(_) => "kube_config",
            Self::Prometheus(_) => "prometheus",
            Self::Agent(_) => "agent",
            Self::AgentReply(_) => "agent_reply",
            Self::Yaml(_) => "yaml",
            Self::Url { .. } => "url",
            Self::Config(_) => "config",
            Self::InvalidSpec { .. } => "invalid_spec",
            Self::Serve { .. } => "serve",
            Self::Lease(_) => "lease",
            Self::LostLeadership => "lost_leadership",
            Self::Http(_) => "http",
            Self::Certificate(_) => "certificate",
        }
    }

    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }
}

/// True when a kube error is the apiserver's 409 (a precondition such as resourceVersion failed).
pub(crate) fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}
