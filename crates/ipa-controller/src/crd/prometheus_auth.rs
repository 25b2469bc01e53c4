//! `spec.metadata.prometheusAuth`: how the controller authenticates to a Prometheus that wants it (managed
//! services, a proxy in front of a shared one). Secret values come from Secrets in the IPA's namespace, never from
//! the spec; the controller needs `get` on them (a Role in that namespace).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAuth {
    /// A Secret key whose value is sent as `Authorization: Bearer <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// HTTP basic auth from a Secret; ignored when a bearer token is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// A Secret key holding PEM certificates to trust for an `https` `prometheusUri` (in addition to the
    /// system's roots), for a Prometheus behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Extra request headers, not secret (e.g. `X-Scope-OrgID: tenant-a` for Mimir, Cortex or Thanos).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Basic-auth credentials, each from a key of a Secret in the IPA's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The key of a Secret holding the user name.
    pub username_secret_ref: SecretKeyRef,
    /// The key of a Secret holding the password.
    pub password_secret_ref: SecretKeyRef,
}
