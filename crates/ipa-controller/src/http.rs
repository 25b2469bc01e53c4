//! The controller's HTTP client (Prometheus and the agent), one per private CA an IPA names, and capped reads.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use crate::Error;

/// The controller's HTTP client (Prometheus and the agent). No redirects: an allowed URL must not bounce the
/// controller (and a token) somewhere else.
pub fn http_client() -> Result<reqwest::Client, Error> {
    builder().build().map_err(Error::Http)
}

fn builder() -> reqwest::ClientBuilder {
    // rustls needs its crypto provider chosen once per process (a no-op when it already is).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("ipa-controller/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        // Drop idle keep-alive connections before the agent does (its idle timeout is at least 60 s), so a request
        // never races the server's close.
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
}

/// Clients that also trust an IPA's private CA, by the CA bundle they were built for: each keeps its connection
/// pool across cycles. Bounded: when more bundles than this are in use, the cache starts over.
#[derive(Debug, Default)]
pub struct CaClients {
    clients: Mutex<HashMap<u64, reqwest::Client>>,
}

const MAX_CA_CLIENTS: usize = 64;

impl CaClients {
    /// A client trusting the PEM certificates in `bundle` besides the system's roots.
    pub fn trusting(&self, bundle: &[u8]) -> Result<reqwest::Client, Error> {
        let mut hasher = DefaultHasher::new();
        bundle.hash(&mut hasher);
        let key = hasher.finish();
        // A poisoned lock only means a panic mid-insert; the map is still a valid map.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let certificates = reqwest::Certificate::from_pem_bundle(bundle).map_err(Error::Http)?;
        if certificates.is_empty() {
            return Err(Error::Config(
                "the CA bundle holds no PEM certificate".into(),
            ));
        }
        let client = builder()
            .tls_certs_merge(certificates)
            .build()
            .map_err(Error::Http)?;
        if clients.len() >= MAX_CA_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// Why a capped body read failed.
#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

impl BodyError {
    pub(crate) fn describe(self, max: usize) -> String {
        match self {
            Self::TooLarge => format!("body larger than {max} bytes"),
            Self::Read(e) => describe(e),
        }
    }
}

/// Reads a body of at most `max` bytes: a larger `Content-Length` is refused before reading, and a body without
/// one (chunked) is read chunk by chunk and refused as soon as it passes the cap — never an unbounded read.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let hint = response.content_length().unwrap_or(0).min(max as u64) as usize;
    let mut body = Vec::with_capacity(hint);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's Display repeats the URL; callers print it once themselves.
pub(crate) fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused or unreachable".to_string()
    } else {
        e.without_url().to_string()
    }
}
