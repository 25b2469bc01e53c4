//! Slim views of the API objects a cycle reads, and the paged list that fills them.
//!
//! A cycle reads every Deployment, ReplicaSet, pod and Event in its targets' namespaces. Read as full
//! `k8s_openapi` objects, a 1,000-target namespace costs tens of MiB per cycle: every object carries its
//! `managedFields` (a JSON tree per field manager), annotations and whole pod spec, and kube's `ObjectList`
//! flattens its type fields, which makes serde buffer each page into an intermediate tree before building the
//! items. These types name only the fields the controller uses; serde skips the rest without allocating.

use k8s_openapi::api::core::v1::{ObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Client;
use kube::api::ListParams;
use kube::core::Request;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// One page of a list response.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    #[serde(default)]
    pub metadata: PageMeta,
    #[serde(
        default = "Vec::new",
        deserialize_with = "null_as_empty",
        bound(deserialize = "T: Deserialize<'de>")
    )]
    pub items: Vec<T>,
}

/// Where the next page starts.
#[derive(Debug, Default, Deserialize)]
pub struct PageMeta {
    #[serde(default, rename = "continue")]
    pub continue_token: Option<String>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The metadata a cycle needs: identity, version for optimistic writes, and the controlling owner.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub owner_references: Option<Vec<Owner>>,
    #[serde(default)]
    pub creation_timestamp: Option<Time>,
}

impl Meta {
    /// Name of the controlling owner of `kind`, if any.
    pub fn controller_of_kind(&self, kind: &str) -> Option<&str> {
        self.owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == kind && o.controller == Some(true))
            .map(|o| o.name.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Owner {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// Metadata only (ReplicaSets and pods, listed as `PartialObjectMetadata`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MetaOnly {
    #[serde(default)]
    pub metadata: Meta,
}

/// A Deployment as the controller sees it: replicas, readiness and its containers' resources.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DeploymentView {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: DeploymentSpecView,
    #[serde(default)]
    pub status: Option<DeploymentStatusView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DeploymentSpecView {
    #[serde(default)]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub template: TemplateView,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TemplateView {
    #[serde(default)]
    pub spec: Option<PodSpecView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodSpecView {
    #[serde(default)]
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContainerView {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatusView {
    #[serde(default)]
    pub ready_replicas: Option<i32>,
}

impl DeploymentView {
    pub fn containers(&self) -> &[ContainerView] {
        self.spec
            .template
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
    }

    /// The reference Events about this Deployment point at.
    pub fn object_ref(&self, namespace: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(self.metadata.name.clone()),
            namespace: Some(namespace.into()),
            uid: self.metadata.uid.clone(),
            resource_version: self.metadata.resource_version.clone(),
            field_path: None,
        }
    }
}

/// A core/v1 Event: what happened to which object, how often, when.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub involved_object: InvolvedObject,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub count: Option<i32>,
    #[serde(default)]
    pub last_timestamp: Option<Time>,
    #[serde(default)]
    pub event_time: Option<MicroTime>,
    #[serde(default)]
    pub reporting_component: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct InvolvedObject {
    #[serde(default)]
    pub name: Option<String>,
}

impl EventView {
    /// When it was last seen (unix seconds): the last timestamp, else the event time, else its creation.
    pub fn last_seen(&self) -> i64 {
        self.last_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .or_else(|| self.event_time.as_ref().map(|t| t.0.as_second()))
            .or_else(|| {
                self.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
            })
            .unwrap_or(0)
    }
}

/// Objects per list page: peak memory is a page, not a namespace.
pub const PAGE_SIZE: u32 = 250;

/// Lists every page of `request`'s collection as slim items, handing each to `keep`; counts each page asked
/// for in `pages` (also when a page fails). Stops at the first error.
pub async fn list_every_page<T: DeserializeOwned + Send>(
    client: &Client,
    request: &Request,
    metadata_only: bool,
    pages: &mut u64,
    mut keep: impl FnMut(T) + Send,
) -> Result<(), kube::Error> {
    let mut params = ListParams::default().limit(PAGE_SIZE);
    loop {
        *pages += 1;
        let page = list_page::<T>(client, request, &params, metadata_only).await?;
        let next = page.metadata.continue_token.filter(|c| !c.is_empty());
        page.items.into_iter().for_each(&mut keep);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Fetches one page of `request`'s collection into slim items (`metadata_only`: as `PartialObjectMetadata`).
pub async fn list_page<T: DeserializeOwned>(
    client: &Client,
    request: &Request,
    params: &ListParams,
    metadata_only: bool,
) -> Result<Page<T>, kube::Error> {
    let http_request = if metadata_only {
        request.list_metadata(params)
    } else {
        request.list(params)
    }
    .map_err(kube::Error::BuildRequest)?;
    client.request::<Page<T>>(http_request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_it_needs_from_a_full_deployment() -> Result<(), serde_json::Error> {
        let body = r#"{"kind":"DeploymentList","apiVersion":"apps/v1","metadata":{"resourceVersion":"9","continue":"c1"},
          "items":[{"metadata":{"name":"web","namespace":"n","uid":"u1","resourceVersion":"7",
            "annotations":{"a":"b"},
            "managedFields":[{"manager":"kubectl","operation":"Update","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:replicas":{}}}}]},
            "spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},
              "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[
                {"name":"app","image":"x","resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"memory":"128Mi"}}}]}}},
            "status":{"replicas":3,"readyReplicas":2,"conditions":[{"type":"Available","status":"True"}]}}]}"#;
        let page: Page<DeploymentView> = serde_json::from_str(body)?;
        assert_eq!(page.metadata.continue_token.as_deref(), Some("c1"));
        let d = &page.items[0];
        assert_eq!(d.metadata.name, "web");
        assert_eq!(d.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(d.spec.replicas, Some(3));
        assert_eq!(d.status.as_ref().and_then(|s| s.ready_replicas), Some(2));
        let requests = d.containers()[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref());
        assert_eq!(
            requests.and_then(|r| r.get("cpu")).map(|q| q.0.as_str()),
            Some("100m")
        );
        let reference = d.object_ref("n");
        assert_eq!(reference.kind.as_deref(), Some("Deployment"));
        assert_eq!(reference.uid.as_deref(), Some("u1"));
        Ok(())
    }

    #[test]
    fn empty_and_null_lists_are_empty_pages() -> Result<(), serde_json::Error> {
        let page: Page<MetaOnly> = serde_json::from_str(r#"{"metadata":{},"items":null}"#)?;
        assert!(page.items.is_empty() && page.metadata.continue_token.is_none());
        let page: Page<MetaOnly> = serde_json::from_str("{}")?;
        assert!(page.items.is_empty());
        Ok(())
    }

    #[test]
    fn owners_and_event_times() -> Result<(), serde_json::Error> {
        let pod: MetaOnly = serde_json::from_str(
            r#"{"metadata":{"name":"web-1-a","ownerReferences":[
                {"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-1","uid":"x","controller":true}]}}"#,
        )?;
        assert_eq!(pod.metadata.controller_of_kind("ReplicaSet"), Some("web-1"));
        assert_eq!(pod.metadata.controller_of_kind("Deployment"), None);
        let event: EventView = serde_json::from_str(
            r#"{"metadata":{"name":"e","creationTimestamp":"2026-01-01T00:00:00Z"},
                "involvedObject":{"kind":"Pod","name":"web-1-a"},"type":"Warning","reason":"OOMKilling",
                "eventTime":"2026-01-01T00:00:10.000000Z","count":2}"#,
        )?;
        assert_eq!(event.last_seen(), 1_767_225_610);
        assert_eq!(event.involved_object.name.as_deref(), Some("web-1-a"));
        Ok(())
    }
}
