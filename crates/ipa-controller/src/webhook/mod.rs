//! The mutating admission webhook for Pod CREATE (issue 12, item 2): a new pod of a Deployment that an IPA
//! resizes in place is born at the size its running pods were brought to, with the Deployment's template left
//! byte-for-byte as it was.
//!
//! Every replica serves it (the apiserver calls whichever the Service picks), over HTTPS with the certificates
//! of [`tls`], and answers from the IPAs' status (`groups[].podResources`, written by the leader each cycle),
//! which a reflector keeps in memory: no API call on the admission path, the same answer from every replica,
//! and nothing lost on a restart. The decision itself is the pure [`admission::admit`].
//!
//! The configuration (install.yaml, the chart) has `failurePolicy: Ignore` and a short timeout, so a webhook
//! that is down costs new pods their size at birth, never their creation; the write stage then resizes them in
//! place, and the IPA's `WebhookAvailable` condition says the webhook was missed.

pub mod admission;
pub mod config;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use ipa_core::{ContainerRecommendation, Resources};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Error;
use crate::clock::now_unix;
use crate::crd::{ContainerResources, IPA};
use admission::PodSize;

/// Where the apiserver sends Pod CREATE reviews.
pub const PATH: &str = "/mutate-pods";

/// Flags of the webhook (part of `ipa controller`).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Serve the admission webhook over HTTPS on this address (e.g. 0.0.0.0:9443). Off when absent.
    #[arg(long, env = "IPA_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,
    /// The MutatingWebhookConfiguration whose `caBundle` the controller writes.
    #[arg(long, default_value = "ipa-controller")]
    pub webhook_configuration: String,
    /// The Secret (in the controller's namespace) that holds the webhook's CA and serving certificate.
    #[arg(long, default_value = "ipa-controller-webhook-tls")]
    pub webhook_secret: String,
    /// DNS names or IP addresses the serving certificate is for. Repeatable. Default: the webhook Service,
    /// `ipa-controller-webhook.<namespace>.svc`.
    #[arg(long = "webhook-host", value_delimiter = ',')]
    pub webhook_hosts: Vec<String>,
    /// Validity of the CA and serving certificate; they are replaced in the last third of it.
    #[arg(long, default_value = "2160h", value_parser = crate::duration)]
    pub webhook_cert_validity: Duration,
}

/// What the rest of the controller learns from the webhook.
#[derive(Debug, Default)]
pub struct WebhookState {
    /// Unix seconds since which the configuration has had this controller's `caBundle`: pods created later
    /// should carry the admission annotation. 0 while it has not.
    configured_since: AtomicI64,
    /// Per in-place target (`namespace/deployment`): since when this process has named its pod size in status.
    sized_since: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl WebhookState {
    /// Since when the webhook has been configured and served, if it has.
    pub fn configured_since(&self) -> Option<i64> {
        Some(self.configured_since.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Since when the target's pod size has been named (`now` the first time it is asked; a restart starts
    /// over, which only makes fewer pods witnesses).
    pub fn sized_since(&self, target: &str, now: i64) -> i64 {
        let mut map = self.sized_since.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(target.to_string()).or_insert(now)
    }

    /// Forgets a target whose pods are no longer sized at admission.
    pub fn forget_size(&self, target: &str) {
        let mut map = self.sized_since.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(target);
    }
}

/// The size new pods of `namespace/deployment` get, from the IPAs' status.
pub fn size_in(ipas: &[Arc<IPA>], namespace: &str, deployment: &str) -> Option<PodSize> {
    ipas.iter().find_map(|ipa| {
        let group = ipa.status.as_ref()?.groups.iter().find(|g| {
            g.namespace == namespace && g.deployment == deployment && !g.pod_resources.is_empty()
        })?;
        Some(PodSize {
            ipa: format!("{}/{}", ipa.namespace().unwrap_or_default(), ipa.name_any()),
            containers: group.pod_resources.iter().map(recommendation).collect(),
        })
    })
}

fn recommendation(c: &ContainerResources) -> ContainerRecommendation {
    let values = |v: &crate::crd::ResourceValues| Resources {
        cpu: v.cpu,
        memory: v.memory,
    };
    ContainerRecommendation {
        name: c.name.clone(),
        requests: values(&c.requests),
        limits: values(&c.limits),
    }
}

async fn mutate(
    State(ipas): State<Store<IPA>>,
    Json(review): Json<AdmissionReview<Pod>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(e) => {
            warn!(error = %e, "admission review without a request");
            return Json(AdmissionResponse::invalid(e.to_string()).into_review());
        }
    };
    let state = ipas.state();
    let response = admission::admit(&request, |ns, deployment| size_in(&state, ns, deployment));
    if response.patch.is_some() {
        info!(namespace = ?request.namespace, pod = %request.name, "pod sized at admission");
    }
    Json(response.into_review())
}

/// Starts the webhook in the background when `--webhook-listen` is given: certificates from (or into) the
/// Secret, the IPA reflector, the HTTPS server, the `caBundle`, and a task that rotates the certificates before
/// they expire. A setup that fails (RBAC, a port in use) is retried every 30 s and never stops the controller:
/// pods are then created at their template's size and `WebhookAvailable` says the webhook is not configured.
pub fn start(
    client: Client,
    args: &WebhookArgs,
    (namespace, watch_namespace): (&str, Option<&str>),
    stop: watch::Receiver<bool>,
) -> Option<Arc<WebhookState>> {
    let addr = args.webhook_listen?;
    let hosts = if args.webhook_hosts.is_empty() {
        vec![format!("ipa-controller-webhook.{namespace}.svc")]
    } else {
        args.webhook_hosts.clone()
    };
    let state = Arc::new(WebhookState::default());
    let keeper = Keeper {
        configs: Api::all(client.clone()),
        config_name: args.webhook_configuration.clone(),
        secrets: Api::namespaced(client.clone(), namespace),
        namespace: namespace.to_string(),
        secret_name: args.webhook_secret.clone(),
        hosts,
        validity: args.webhook_cert_validity.as_secs().max(3600) as i64,
        state: state.clone(),
    };
    let ipas = ipa_store(&client, watch_namespace);
    tokio::spawn(async move {
        let mut stop = stop;
        loop {
            match keeper.serve(addr, ipas.clone()).await {
                Ok((certificates, rustls, handle)) => {
                    return keeper.run((certificates, rustls), stop, handle).await;
                }
                Err(e) => warn!(error = %e, "webhook: not serving; retrying in 30 s"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Some(state)
}

/// The serving part of the webhook once it runs.
type Serving = (
    tls::Certificates,
    axum_server::tls_rustls::RustlsConfig,
    axum_server::Handle<SocketAddr>,
);

/// A reflector over the IPAs (their status holds the sizes), driven by a task of its own.
fn ipa_store(client: &Client, namespace: Option<&str>) -> Store<IPA> {
    let api: Api<IPA> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                warn!(error = %e, "webhook: watching IPAs");
            }
        }
    });
    reader
}

/// Keeps the `caBundle` written and the certificates fresh.
struct Keeper {
    configs: Api<MutatingWebhookConfiguration>,
    config_name: String,
    secrets: Api<Secret>,
    namespace: String,
    secret_name: String,
    hosts: Vec<String>,
    validity: i64,
    state: Arc<WebhookState>,
}

impl Keeper {
    /// The certificates (from or into the Secret), then the HTTPS server on `addr`.
    async fn serve(&self, addr: SocketAddr, ipas: Store<IPA>) -> Result<Serving, Error> {
        let secret = (self.namespace.as_str(), self.secret_name.as_str());
        let now = now_unix();
        let certificates =
            tls::ensure(&self.secrets, secret, &self.hosts, self.validity, now).await?;
        let serve_error = |source| Error::Serve {
            addr: addr.to_string(),
            source,
        };
        let (cert, key) = (&certificates.cert_pem, &certificates.key_pem);
        let rustls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.clone().into_bytes(),
            key.clone().into_bytes(),
        )
        .await
        .map_err(serve_error)?;
        let app = Router::new().route(PATH, post(mutate)).with_state(ipas);
        let handle = axum_server::Handle::<SocketAddr>::new();
        let server = axum_server::bind_rustls(addr, rustls.clone()).handle(handle.clone());
        tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                warn!(error = %e, "webhook server stopped");
            }
        });
        let local = handle.listening().await.ok_or_else(|| {
            serve_error(std::io::Error::other(
                "the webhook server did not start listening",
            ))
        })?;
        info!(addr = %local, path = PATH, "serving the admission webhook");
        Ok((certificates, rustls, handle))
    }

    /// Checks every minute at first (until the `caBundle` is written), then every `validity / 20` (at most an
    /// hour): another replica may have rotated the pair, or someone may have re-created the configuration.
    async fn run(
        self,
        (mut serving, rustls): (tls::Certificates, axum_server::tls_rustls::RustlsConfig),
        mut stop: watch::Receiver<bool>,
        handle: axum_server::Handle<SocketAddr>,
    ) {
        loop {
            self.write_bundle(&serving).await;
            let every = if self.state.configured_since().is_some() {
                Duration::from_secs((self.validity / 20).clamp(60, 3600) as u64)
            } else {
                Duration::from_secs(10)
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let secret = (self.namespace.as_str(), self.secret_name.as_str());
            match tls::ensure(
                &self.secrets,
                secret,
                &self.hosts,
                self.validity,
                now_unix(),
            )
            .await
            {
                Ok(fresh) if fresh != serving => {
                    // The bundle first (it trusts old and new), then the new certificate.
                    self.write_bundle(&fresh).await;
                    let (cert, key) = (fresh.cert_pem.clone(), fresh.key_pem.clone());
                    match rustls
                        .reload_from_pem(cert.into_bytes(), key.into_bytes())
                        .await
                    {
                        Ok(()) => {
                            info!(not_after = fresh.not_after, "webhook certificate rotated");
                            serving = fresh;
                        }
                        Err(e) => warn!(error = %e, "webhook: loading the new certificate"),
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "webhook: checking the certificates"),
            }
        }
        handle.graceful_shutdown(Some(Duration::from_secs(5)));
    }

    async fn write_bundle(&self, c: &tls::Certificates) {
        let bundle = c.ca_bundle();
        match config::write_ca_bundle(&self.configs, &self.config_name, bundle.as_bytes()).await {
            Ok(changed) => {
                if changed {
                    info!(configuration = %self.config_name, "webhook caBundle written");
                }
                let _ = self.state.configured_since.compare_exchange(
                    0,
                    now_unix(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Err(e) => {
                warn!(error = %e, "webhook: the caBundle could not be written; pods are created at their template's size")
            }
        }
    }
}

/// Condition type, on an in-place target and on the IPA: new pods of the target are sized at admission.
pub const CONDITION: &str = "WebhookAvailable";

/// Seconds after the status first named a target's size before its new pods must carry the annotation: the
/// webhook's reflector sees the status a moment after it is written.
const GRACE_SECS: i64 = 5;

/// Whether new pods of an in-place target are sized at admission. `configured_since`: since when this
/// controller serves the webhook and its configuration trusts it (`None` with `served` false: it does not serve
/// one); `sized_since`: since when the status has named the target's pod size. The newest pod created after both (plus a grace) is the witness: with the
/// annotation the webhook saw it, without it the webhook was not reached (`failurePolicy: Ignore` let the pod
/// be created at its template's size).
pub fn availability(
    served: bool,
    configured_since: Option<i64>,
    sized_since: Option<i64>,
    pods: &[crate::in_place::PodView],
) -> crate::conditions::Want {
    use crate::conditions::Want;
    if !served {
        let why = "this controller does not serve the admission webhook (--webhook-listen): new pods start at \
                   the template's size and are resized in place";
        return Want::new(CONDITION, false, "WebhookNotServed", why);
    }
    let Some(configured) = configured_since else {
        let why = "the webhook configuration's caBundle is not written yet: new pods start at the template's size \
                   and are resized in place";
        return Want::new(CONDITION, false, "WebhookNotConfigured", why);
    };
    let Some(sized) = sized_since else {
        return Want::new(
            CONDITION,
            true,
            "Waiting",
            "no pod created since the webhook was configured",
        );
    };
    let after = configured.max(sized) + GRACE_SECS;
    let newest = pods
        .iter()
        .filter(|p| !p.terminating && p.created.is_some_and(|c| c > after))
        .max_by_key(|p| p.created);
    match newest {
        None => Want::new(
            CONDITION,
            true,
            "Waiting",
            "no pod created since the webhook was configured",
        ),
        Some(p) if p.admitted => Want::new(
            CONDITION,
            true,
            "Admitted",
            format!("pod {} was sized at admission", p.name),
        ),
        Some(p) => {
            let why = format!(
                "pod {} was created without the admission webhook's annotation: the webhook is unavailable \
                 (unreachable, timing out, or not called); new pods start at the template's size and are \
                 resized in place",
                p.name
            );
            Want::new(CONDITION, false, "WebhookUnavailable", why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_place::PodView;

    fn pod(name: &str, created: i64, admitted: bool) -> PodView {
        PodView {
            name: name.into(),
            created: Some(created),
            admitted,
            ..PodView::default()
        }
    }

    #[test]
    fn the_newest_pod_since_the_webhook_was_configured_says_whether_it_is_reached() {
        let reason = |w: crate::conditions::Want| (w.ok, w.reason);
        let old = pod("old", 100, false);
        assert_eq!(
            reason(availability(false, None, Some(100), &[])).1,
            "WebhookNotServed"
        );
        assert_eq!(
            reason(availability(true, None, Some(100), &[])).1,
            "WebhookNotConfigured"
        );
        // Pods from before the webhook or the size: no witness.
        assert_eq!(
            reason(availability(
                true,
                Some(200),
                Some(100),
                std::slice::from_ref(&old)
            )),
            (true, "Waiting".into())
        );
        let seen = pod("seen", 300, true);
        let missed = pod("missed", 400, false);
        assert_eq!(
            reason(availability(
                true,
                Some(200),
                Some(100),
                &[old.clone(), seen.clone()]
            )),
            (true, "Admitted".into())
        );
        assert_eq!(
            reason(availability(
                true,
                Some(200),
                Some(100),
                &[seen.clone(), missed.clone()]
            )),
            (false, "WebhookUnavailable".into())
        );
        // Back again: a newer pod carries the annotation.
        let later = pod("later", 500, true);
        assert_eq!(
            reason(availability(true, Some(200), Some(100), &[missed, later])),
            (true, "Admitted".into())
        );
        // Within the grace after the size was first named: not yet a witness.
        assert_eq!(
            reason(availability(true, Some(200), Some(298), &[seen])),
            (true, "Waiting".into())
        );
    }
}
