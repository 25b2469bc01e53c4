//! Stage 1 of a cycle: what the API and Prometheus say about the IPA's targets — only in namespaces the IPA may
//! act on (its own, and those that opted in), so a refused namespace is neither listed nor queried.

pub mod cluster;
pub mod metrics;
pub mod prometheus;
pub mod promql;
pub mod slim;

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;

use crate::crd::IPA;
use crate::reconcile::Context;
use crate::tenancy::Access;
use cluster::{Kube, NamespaceView};
use metrics::{Frame, Queried};
use prometheus::Prometheus;
use promql::{Selection, Windows};

/// Everything a cycle reads.
#[derive(Debug, Default)]
pub struct Reading {
    /// Whether the IPA may act in each namespace its targets name.
    pub access: HashMap<String, Access>,
    /// The API's view of each allowed namespace.
    pub views: HashMap<String, NamespaceView>,
    pub queried: Queried,
}

impl Reading {
    pub fn allowed(&self, namespace: &str) -> bool {
        self.access.get(namespace).is_some_and(|a| a.allowed())
    }
}

/// Reads the namespaces' access, then the API lists and the Prometheus queries side by side.
pub async fn read(ctx: &Context, ipa: &IPA, frame: Frame) -> Reading {
    let kube = Kube {
        client: &ctx.client,
        metrics: &ctx.metrics,
    };
    let spec = &ipa.spec.metadata;
    let namespaces: BTreeSet<&str> = spec
        .ipa_group
        .iter()
        .map(|g| g.namespace.as_str())
        .collect();
    let ipa_namespace = ipa.namespace().unwrap_or_default();
    let allow_all = ctx.settings.allow_cross_namespace;
    let mut reading = Reading {
        access: cluster::namespace_access(kube, &ipa_namespace, &namespaces, allow_all).await,
        ..Reading::default()
    };
    let allowed: Vec<&crate::crd::IpaGroup> = spec
        .ipa_group
        .iter()
        .filter(|g| reading.allowed(&g.namespace))
        .collect();
    if allowed.is_empty() {
        return reading;
    }
    let events_since = frame.now - ctx.settings.events_window as i64;
    let lists = futures::future::join_all(namespaces.iter().filter(|ns| reading.allowed(ns)).map(
        |ns| {
            let targets: BTreeSet<&str> = allowed
                .iter()
                .filter(|g| g.namespace == *ns)
                .map(|g| g.deployment.as_str())
                .collect();
            async move {
                (
                    ns.to_string(),
                    cluster::read_namespace(kube, ns, &targets, events_since).await,
                )
            }
        },
    ));
    let selection = Selection {
        namespaces: allowed.iter().map(|g| g.namespace.clone()).collect(),
        deployments: allowed.iter().map(|g| g.deployment.clone()).collect(),
        ingresses: allowed
            .iter()
            .filter_map(|g| g.ingress.clone().filter(|i| !i.is_empty()))
            .collect(),
    };
    let prom = Prometheus::new(
        ctx.http.clone(),
        &spec.prometheus_uri,
        ctx.settings.prometheus_timeout,
        ctx.metrics.clone(),
    );
    let windows = Windows {
        rate: ctx.settings.rate_window,
        stats: ctx.settings.stats_window,
    };
    let (views, queried) =
        tokio::join!(lists, metrics::query_all(&prom, &selection, windows, frame));
    reading.views = views.into_iter().collect();
    reading.queried = queried;
    reading
}
