//! The Kubernetes API, read once per kind per namespace (not once per target), a page at a time.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod, Secret};
use kube::core::Request;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::in_place::PodView;
use crate::metrics::Metrics;
use crate::read::slim::{self, DeploymentView, EventView, Meta, MetaOnly, Owner};
use crate::reconcile::MANAGER;
use crate::tenancy::{self, Access};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// What the API says about one namespace this cycle.
#[derive(Debug, Default)]
pub struct NamespaceView {
    /// The targets found, by name; `None` when the list failed.
    pub deployments: Option<HashMap<String, DeploymentView>>,
    /// Deployment name → its ReplicaSets.
    pub replica_sets: Option<HashMap<String, Vec<String>>>,
    /// ReplicaSet name → its pods.
    pub pods: Option<HashMap<String, Vec<String>>>,
    /// Events by the name of the object they are about.
    pub events: HashMap<String, Vec<EventView>>,
    /// Pods with their spec and resize state, by name — read only where a target resizes in place.
    pub pod_views: HashMap<String, PodView>,
    pub error: Option<String>,
}

/// The API client and the counter of its requests.
#[derive(Clone, Copy)]
pub struct Kube<'a> {
    pub client: &'a Client,
    pub metrics: &'a Metrics,
}

impl std::fmt::Debug for Kube<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube").finish_non_exhaustive()
    }
}

/// Names of objects grouped by the name of their controlling owner of `kind`.
fn children_by_owner(items: Vec<MetaOnly>, kind: &str) -> HashMap<String, Vec<String>> {
    let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
    for m in items {
        if let Some(parent) = m.metadata.controller_of_kind(kind) {
            by_owner
                .entry(parent.to_string())
                .or_default()
                .push(m.metadata.name);
        }
    }
    by_owner
}

impl Kube<'_> {
    /// Lists every page of `request`'s collection as slim items, handing each to `keep`; each page is one API
    /// request in the metrics.
    async fn list<T: DeserializeOwned + Send>(
        self,
        request: &Request,
        metadata_only: bool,
        keep: impl FnMut(T) + Send,
    ) -> Result<(), kube::Error> {
        let mut pages = 0;
        let listed =
            slim::list_every_page(self.client, request, metadata_only, &mut pages, keep).await;
        self.metrics.kube_requests_n("list", pages);
        listed
    }
}

/// Whether an object name can belong to one of `deployments`: the Deployment itself, one of its ReplicaSets
/// (`<deployment>-<hash>`) or pods (`<deployment>-<hash>-<suffix>`).
pub fn may_belong(name: &str, deployments: &BTreeSet<&str>) -> bool {
    let mut candidate = name;
    for _ in 0..3 {
        if deployments.contains(candidate) {
            return true;
        }
        match candidate.rsplit_once('-') {
            Some((head, _)) => candidate = head,
            None => return false,
        }
    }
    false
}

/// The targets of one namespace, their ReplicaSets and pods (owner references inverted once per namespace, so
/// each target's lookups are O(its own objects)) and recent Events about them.
pub async fn read_namespace(
    kube: Kube<'_>,
    ns: &str,
    targets: &BTreeSet<&str>,
    events_since: i64,
    full_pods: bool,
) -> NamespaceView {
    let mut view = NamespaceView::default();
    let mut found = HashMap::new();
    let deployments = Request::new(Deployment::url_path(&(), Some(ns)));
    let listed = kube
        .list(&deployments, false, |d: DeploymentView| {
            if targets.contains(d.metadata.name.as_str()) {
                found.insert(d.metadata.name.clone(), d);
            }
        })
        .await;
    match listed {
        Ok(()) => view.deployments = Some(found),
        Err(e) => view.error = Some(format!("listing deployments in {ns}: {e}")),
    }
    let mut rs_items = Vec::new();
    let replica_sets = Request::new(ReplicaSet::url_path(&(), Some(ns)));
    let listed = kube
        .list(&replica_sets, true, |m: MetaOnly| {
            if may_belong(&m.metadata.name, targets) {
                rs_items.push(m);
            }
        })
        .await;
    view.replica_sets = listed
        .ok()
        .map(|()| children_by_owner(rs_items, "Deployment"));
    let (listed, pod_items, pod_views) = if full_pods {
        read_full_pods(kube, ns, targets).await
    } else {
        let mut pod_items = Vec::new();
        let pods = Request::new(Pod::url_path(&(), Some(ns)));
        let listed = kube
            .list(&pods, true, |m: MetaOnly| {
                if may_belong(&m.metadata.name, targets) {
                    pod_items.push(m);
                }
            })
            .await;
        (listed, pod_items, HashMap::new())
    };
    view.pods = listed
        .ok()
        .map(|()| children_by_owner(pod_items, "ReplicaSet"));
    view.pod_views = pod_views;
    let events = Request::new(CoreEvent::url_path(&(), Some(ns)));
    let listed = kube
        .list(&events, false, |event: EventView| {
            let object = event.involved_object.name.clone().unwrap_or_default();
            if may_belong(&object, targets)
                && event.last_seen() >= events_since
                && event.reporting_component.as_deref() != Some(MANAGER)
            {
                view.events.entry(object).or_default().push(event);
            }
        })
        .await;
    if let Err(e) = listed {
        warn!(namespace = ns, error = %e, "cannot list events");
    }
    view
}

/// The targets' pods in full (spec, resize conditions), for in-place resizes — one list that also gives the
/// owner references the metadata-only list would have. A failed list leaves no views: the targets' sizes then
/// come from their templates.
async fn read_full_pods(
    kube: Kube<'_>,
    ns: &str,
    targets: &BTreeSet<&str>,
) -> (
    Result<(), kube::Error>,
    Vec<MetaOnly>,
    HashMap<String, PodView>,
) {
    let pods = Request::new(Pod::url_path(&(), Some(ns)));
    let (mut items, mut views) = (Vec::new(), HashMap::new());
    let listed = kube
        .list(&pods, false, |pod: Pod| {
            let Some(view) = PodView::from_pod(&pod).filter(|v| may_belong(&v.name, targets))
            else {
                return;
            };
            items.push(MetaOnly {
                metadata: Meta {
                    name: view.name.clone(),
                    owner_references: owners(pod.metadata.owner_references.as_deref()),
                    ..Meta::default()
                },
            });
            views.insert(view.name.clone(), view);
        })
        .await;
    if let Err(e) = &listed {
        warn!(namespace = ns, error = %e, "cannot list pods in full; in-place sizes unknown this cycle");
        views.clear();
    }
    (listed, items, views)
}

fn owners(refs: Option<&[OwnerReference]>) -> Option<Vec<Owner>> {
    let owner = |o: &OwnerReference| Owner {
        kind: o.kind.clone(),
        name: o.name.clone(),
        controller: o.controller,
    };
    refs.map(|refs| refs.iter().map(owner).collect())
}

/// Reads whether each namespace other than the IPA's lets it in. One metadata read per foreign namespace per
/// cycle; an unreadable (or missing) namespace has not opted in, and says so in the same words as one that did
/// not (no namespace-existence oracle).
pub async fn namespace_access(
    kube: Kube<'_>,
    ipa_namespace: &str,
    namespaces: &BTreeSet<&str>,
    allow_cross_namespace: bool,
) -> HashMap<String, Access> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let mut out = HashMap::new();
    for ns in namespaces {
        let annotation = if *ns == ipa_namespace || allow_cross_namespace {
            None
        } else {
            kube.metrics.kube_request("get");
            match api.get_metadata_opt(ns).await {
                Ok(meta) => meta.and_then(|m| {
                    m.metadata
                        .annotations
                        .and_then(|mut a| a.remove(tenancy::ALLOW_FROM_ANNOTATION))
                }),
                Err(e) => {
                    warn!(namespace = ns, error = %e, "cannot read the target namespace; refusing it");
                    None
                }
            }
        };
        let access = tenancy::access(
            ipa_namespace,
            ns,
            annotation.as_deref(),
            allow_cross_namespace,
        );
        out.insert(ns.to_string(), access);
    }
    out
}

/// One key of a Secret in `namespace`, trimmed; `None` (and a log line) when it can't be read.
pub async fn secret_value(
    kube: Kube<'_>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), namespace);
    kube.metrics.kube_request("get");
    match secrets.get(name).await {
        Ok(secret) => secret
            .data
            .and_then(|d| d.get(key).cloned())
            .and_then(|v| String::from_utf8(v.0).ok())
            .map(|t| t.trim().to_string()),
        Err(e) => {
            warn!(secret = %name, error = %e, "cannot read the secret");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_attributed_to_their_deployment() {
        let targets: BTreeSet<&str> = ["web", "api-v2"].into();
        assert!(may_belong("web", &targets));
        assert!(may_belong("web-5d8f7c9b4", &targets));
        assert!(may_belong("web-5d8f7c9b4-x2x9z", &targets));
        assert!(may_belong("api-v2-5d8f7c9b4-x2x9z", &targets));
        assert!(!may_belong("webapp-5d8f7c9b4-x2x9z", &targets));
        assert!(!may_belong("other", &targets));
    }
}
