//! The webhook's certificates: a self-signed CA and a serving certificate it signs, kept in a Secret of the
//! controller's namespace so every replica serves the same certificate (the apiserver may call any of them
//! through the Service) and the CA survives restarts. Whoever finds the Secret missing, issued for other hosts,
//! or in the last third of its validity issues a new pair; a `resourceVersion` precondition makes one replica win
//! and the others read its pair. The previous CA stays in the Secret (and so in the `caBundle`) for one more
//! period, so an apiserver that still trusts only the old CA is not refused while the new bundle propagates.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tracing::info;

use crate::Error;

const CA: &str = "ca.crt";
const PREVIOUS_CA: &str = "previous-ca.crt";
const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
const NOT_BEFORE: &str = "ipa.shafinhasnat.me/not-before";
const NOT_AFTER: &str = "ipa.shafinhasnat.me/not-after";
const HOSTS: &str = "ipa.shafinhasnat.me/hosts";

/// A CA and the serving certificate it signed, in PEM, with the validity both share (unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Certificates {
    pub ca_pem: String,
    /// The CA before the last rotation, still trusted by the `caBundle`.
    pub previous_ca_pem: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses the serving certificate is for.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// What the webhook configuration's `caBundle` holds: the CA, and the previous one while it may be in use.
    pub fn ca_bundle(&self) -> String {
        match &self.previous_ca_pem {
            Some(previous) => format!("{}{}", self.ca_pem, previous),
            None => self.ca_pem.clone(),
        }
    }

    /// True once the last third of the validity has begun (or it is not valid at all): time to rotate.
    pub fn due(&self, now: i64) -> bool {
        let third = (self.not_after - self.not_before) / 3;
        now >= self.not_after - third || now < self.not_before
    }
}

fn tls_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Certificate(format!("{what}: {e}"))
}

fn time(unix: i64) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| Error::Certificate(format!("time {unix}: {e}")))
}

/// Issues a new CA and a serving certificate for `hosts`, valid from a minute ago (clock skew) for
/// `validity_secs`.
pub fn issue(hosts: &[String], now: i64, validity_secs: i64) -> Result<Certificates, Error> {
    let (not_before, not_after) = (now - 60, now + validity_secs);
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_error("ca"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "ipa-controller webhook CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = time(not_before)?;
    ca.not_after = time(not_after)?;
    let ca_key = KeyPair::generate().map_err(tls_error("ca key"))?;
    let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(tls_error("ca"))?;
    let mut leaf = CertificateParams::new(hosts.to_vec()).map_err(tls_error("hosts"))?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("ipa-controller", String::as_str),
    );
    leaf.not_before = time(not_before)?;
    leaf.not_after = time(not_after)?;
    let key = KeyPair::generate().map_err(tls_error("key"))?;
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(tls_error("serving certificate"))?;
    Ok(Certificates {
        ca_pem: issuer.pem(),
        previous_ca_pem: None,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
        hosts: hosts.to_vec(),
    })
}

/// The Secret's content for `c`.
pub fn to_secret(name: &str, namespace: &str, c: &Certificates) -> Secret {
    let mut data = BTreeMap::from([
        (CA.to_string(), ByteString(c.ca_pem.clone().into_bytes())),
        (
            CERT.to_string(),
            ByteString(c.cert_pem.clone().into_bytes()),
        ),
        (KEY.to_string(), ByteString(c.key_pem.clone().into_bytes())),
    ]);
    if let Some(previous) = &c.previous_ca_pem {
        data.insert(
            PREVIOUS_CA.into(),
            ByteString(previous.clone().into_bytes()),
        );
    }
    let annotations = BTreeMap::from([
        (NOT_BEFORE.to_string(), c.not_before.to_string()),
        (NOT_AFTER.to_string(), c.not_after.to_string()),
        (HOSTS.to_string(), c.hosts.join(",")),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The certificates in a Secret; `None` when any part is missing or unreadable (then a new pair is issued).
pub fn from_secret(secret: &Secret) -> Option<Certificates> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let annotations = secret.metadata.annotations.as_ref()?;
    let number = |key: &str| annotations.get(key)?.parse::<i64>().ok();
    Some(Certificates {
        ca_pem: text(CA)?,
        previous_ca_pem: text(PREVIOUS_CA),
        cert_pem: text(CERT)?,
        key_pem: text(KEY)?,
        not_before: number(NOT_BEFORE)?,
        not_after: number(NOT_AFTER)?,
        hosts: annotations
            .get(HOSTS)?
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// The certificates to serve: the Secret's while they are for `hosts` and not due, else a new pair written to
/// it (the old CA kept as the previous one). When another replica wrote first (409), its pair is used.
pub async fn ensure(
    secrets: &Api<Secret>,
    (namespace, name): (&str, &str),
    hosts: &[String],
    validity_secs: i64,
    now: i64,
) -> Result<Certificates, Error> {
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading the webhook Secret {name}")))?;
    let current = existing.as_ref().and_then(from_secret);
    if let Some(c) = current.as_ref().filter(|c| !c.due(now) && c.hosts == hosts) {
        return Ok(c.clone());
    }
    let mut fresh = issue(hosts, now, validity_secs)?;
    fresh.previous_ca_pem = current.map(|c| c.ca_pem);
    let mut secret = to_secret(name, namespace, &fresh);
    let written = match existing {
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version;
            secrets.replace(name, &PostParams::default(), &secret).await
        }
        None => secrets.create(&PostParams::default(), &secret).await,
    };
    match written {
        Ok(_) => {
            info!(
                secret = name,
                not_after = fresh.not_after,
                "issued new webhook certificates"
            );
            Ok(fresh)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let theirs = secrets
                .get(name)
                .await
                .map_err(Error::kube(format!("reading the webhook Secret {name}")))?;
            from_secret(&theirs).ok_or_else(|| {
                Error::Certificate(format!(
                    "webhook Secret {name} was written by another replica but is unreadable"
                ))
            })
        }
        Err(e) => Err(Error::kube(format!("writing the webhook Secret {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_round_trips_through_its_secret() -> Result<(), Error> {
        let hosts = vec![
            "ipa-controller-webhook.ipa-system.svc".to_string(),
            "127.0.0.1".into(),
        ];
        let c = issue(&hosts, 1_000_000, 3600)?;
        assert!(c.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem.contains("PRIVATE KEY"));
        let secret = to_secret("tls", "ipa-system", &c);
        assert_eq!(from_secret(&secret), Some(c.clone()));
        assert_eq!(c.ca_bundle(), c.ca_pem);
        Ok(())
    }

    #[test]
    fn rotation_is_due_in_the_last_third_and_keeps_the_old_ca_in_the_bundle() -> Result<(), Error> {
        let c = issue(&["a.svc".to_string()], 1_000_060, 3000)?;
        // Valid 1,000,000 .. 1,003,060: 3,060 s, the last third from 1,002,040.
        assert!(!c.due(1_000_060));
        assert!(!c.due(1_002_039));
        assert!(c.due(1_002_040));
        assert!(c.due(999_000), "not yet valid");
        let next = Certificates {
            previous_ca_pem: Some(c.ca_pem.clone()),
            ..issue(&["a.svc".to_string()], 1_002_040, 3000)?
        };
        assert_ne!(next.ca_pem, c.ca_pem);
        assert_eq!(next.ca_bundle(), format!("{}{}", next.ca_pem, c.ca_pem));
        Ok(())
    }

    #[test]
    fn the_serving_certificate_is_accepted_by_rustls_for_its_hosts()
    -> Result<(), Box<dyn std::error::Error>> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let now = jiff::Timestamp::now().as_second();
        let c = issue(
            &["webhook.ipa-system.svc".to_string(), "127.0.0.1".into()],
            now,
            3600,
        )?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(c.ca_pem.as_bytes())?)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into()).build()?;
        let leaf = CertificateDer::from_pem_slice(c.cert_pem.as_bytes())?;
        for host in ["webhook.ipa-system.svc", "127.0.0.1"] {
            verifier.verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(host)?,
                &[],
                UnixTime::now(),
            )?;
        }
        assert!(
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("other.svc")?,
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );
        PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())?;
        Ok(())
    }
}
