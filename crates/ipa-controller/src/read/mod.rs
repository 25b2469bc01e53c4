//! Stage 1 of a cycle: what the API and Prometheus say about the IPA's targets — only in namespaces the IPA may
//! act on (its own, and those that opted in), so a refused namespace is neither listed nor queried.

pub mod cluster;
pub mod metrics;
pub mod prometheus;
pub mod promql;
pub mod slim;

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;

use crate::conflicts;
use crate::crd::{IPA, IpaGroup, SecretKeyRef};
use crate::reconcile::Context;
use crate::tenancy::Access;
use cluster::{Kube, NamespaceView};
use metrics::{Frame, Queried};
use prometheus::Credentials;
use prometheus::Prometheus;
use promql::{Selection, Windows};
use tracing::warn;

/// Everything a cycle reads.
#[derive(Debug, Default)]
pub struct Reading {
    /// Whether the IPA may act in each namespace its targets name.
    pub access: HashMap<String, Access>,
    /// The API's view of each allowed namespace.
    pub views: HashMap<String, NamespaceView>,
    pub queried: Queried,
    /// HPAs, VPAs, ScaledObjects and other IPAs that may act on the targets.
    pub autoscalers: conflicts::Sources,
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
    let allowed: Vec<&IpaGroup> = spec
        .ipa_group
        .iter()
        .filter(|g| reading.allowed(&g.namespace))
        .collect();
    if allowed.is_empty() {
        return reading;
    }
    let allowed_namespaces: BTreeSet<&str> = allowed.iter().map(|g| g.namespace.as_str()).collect();
    let events_since = frame.now - ctx.settings.events_window as i64;
    let allowed = &allowed;
    let lists = futures::future::join_all(allowed_namespaces.iter().map(|ns| async move {
        let in_ns = || allowed.iter().filter(|g| g.namespace == *ns);
        let targets: BTreeSet<&str> = in_ns().map(|g| g.deployment.as_str()).collect();
        let full_pods = in_ns().any(|g| spec.update_mode_of(g).in_place());
        let view = cluster::read_namespace(kube, ns, &targets, events_since, full_pods).await;
        (ns.to_string(), view)
    }));
    let queries = queries(ctx, ipa, kube, allowed, frame);
    let autoscalers =
        conflicts::read_conflict_sources(&ctx.client, &allowed_namespaces, &ctx.absent_kinds);
    let (views, queried, autoscalers) = tokio::join!(lists, queries, autoscalers);
    ctx.metrics.kube_requests_n("list", autoscalers.requests);
    reading.views = views.into_iter().collect();
    reading.queried = queried;
    reading.autoscalers = autoscalers;
    reading
}

/// The cycle's Prometheus queries for the allowed targets: one per metric for all of them, plus each
/// `demandQuery`.
async fn queries(
    ctx: &Context,
    ipa: &IPA,
    kube: Kube<'_>,
    allowed: &[&IpaGroup],
    frame: Frame,
) -> Queried {
    let demand = metrics::DemandQueries {
        queries: allowed
            .iter()
            .filter_map(|g| {
                let target = ipa_core::TargetRef {
                    namespace: g.namespace.clone(),
                    deployment: g.deployment.clone(),
                };
                Some((target, g.demand_query()?.to_string()))
            })
            .collect(),
        allowed: ctx.settings.allow_demand_query,
    };
    let selection = Selection {
        namespaces: allowed.iter().map(|g| g.namespace.clone()).collect(),
        deployments: allowed.iter().map(|g| g.deployment.clone()).collect(),
        // A target with its own demandQuery does not need the ingress-nginx series.
        ingresses: allowed
            .iter()
            .filter(|g| g.demand_query().is_none())
            .filter_map(|g| g.ingress.clone().filter(|i| !i.is_empty()))
            .collect(),
    };
    let windows = Windows {
        rate: ctx.settings.rate_window,
        stats: ctx.settings.stats_window,
    };
    match prometheus(ctx, ipa, kube).await {
        Ok(prom) => metrics::query_all(&prom, &selection, windows, frame, &demand).await,
        Err(why) => {
            warn!(error = %why, "prometheusAuth unusable; Prometheus not queried");
            let errors = vec!["prometheusAuth".to_string()];
            Queried {
                errors,
                ..Queried::default()
            }
        }
    }
}

/// The IPA's Prometheus client: the shared one, or with the credentials, headers and CA of `prometheusAuth`.
/// What is wrong with them goes to the log (it may name a Secret); status says `prometheusAuth` failed.
async fn prometheus(ctx: &Context, ipa: &IPA, kube: Kube<'_>) -> Result<Prometheus, String> {
    let spec = &ipa.spec.metadata;
    let (uri, timeout) = (&spec.prometheus_uri, ctx.settings.prometheus_timeout);
    let Some(auth) = &spec.prometheus_auth else {
        return Ok(Prometheus::new(
            ctx.http.clone(),
            uri,
            timeout,
            ctx.metrics.clone(),
        ));
    };
    let namespace = ipa.namespace().unwrap_or_default();
    let secret = |r: &SecretKeyRef| {
        let (namespace, r) = (namespace.clone(), r.clone());
        async move {
            cluster::secret_value(kube, &namespace, &r.name, &r.key)
                .await
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!(
                        "key {:?} of Secret {namespace}/{} is missing or unreadable",
                        r.key, r.name
                    )
                })
        }
    };
    let mut credentials = Credentials::default();
    if let Some(r) = &auth.bearer_token_secret_ref {
        credentials.bearer = Some(secret(r).await?);
    } else if let Some(b) = &auth.basic_auth {
        credentials.basic = Some((
            secret(&b.username_secret_ref).await?,
            secret(&b.password_secret_ref).await?,
        ));
    }
    for (name, value) in &auth.headers {
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is invalid"))?;
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name:?} is invalid"))?;
        credentials.headers.push((name.clone(), value.clone()));
    }
    let http = match &auth.ca_secret_ref {
        Some(r) => ctx
            .ca_clients
            .trusting(secret(r).await?.as_bytes())
            .map_err(|e| e.to_string())?,
        None => ctx.http.clone(),
    };
    Ok(Prometheus::new(http, uri, timeout, ctx.metrics.clone()).with_credentials(credentials))
}
