//! The MutatingWebhookConfiguration's `caBundle`. install.yaml and the chart create the configuration without
//! one (the CA is made at run time); the controller writes it with a JSON patch that touches nothing but the
//! `caBundle` of each webhook in it, each guarded by a `test` of that webhook's name, so a configuration edited
//! meanwhile is a refused patch, not a bundle written into the wrong entry.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::PatchParams;
use serde_json::Value;

use crate::Error;
use crate::reconcile::MANAGER;

/// The patch that sets every webhook's `caBundle` to `bundle`; `None` when all already have it.
pub fn ca_bundle_patch(config: &MutatingWebhookConfiguration, bundle: &[u8]) -> Option<Patch> {
    let mut ops = Vec::new();
    for (index, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            == Some(bundle)
        {
            continue;
        }
        let at = |tail: &[&str]| {
            let i = index.to_string();
            PointerBuf::from_tokens(
                ["webhooks", i.as_str()]
                    .into_iter()
                    .chain(tail.iter().copied()),
            )
        };
        ops.push(PatchOperation::Test(TestOperation {
            path: at(&["name"]),
            value: Value::String(webhook.name.clone()),
        }));
        // ByteString serialises as the base64 the API expects.
        let encoded = serde_json::to_value(ByteString(bundle.to_vec())).unwrap_or(Value::Null);
        ops.push(PatchOperation::Add(AddOperation {
            path: at(&["clientConfig", "caBundle"]),
            value: encoded,
        }));
    }
    (!ops.is_empty()).then_some(Patch(ops))
}

/// Writes `bundle` into the configuration `name`; true when it had to change.
pub async fn write_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &[u8],
) -> Result<bool, Error> {
    let config = api.get(name).await.map_err(Error::kube(format!(
        "reading MutatingWebhookConfiguration {name}"
    )))?;
    let Some(patch) = ca_bundle_patch(&config, bundle) else {
        return Ok(false);
    };
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &kube::api::Patch::<()>::Json(patch))
        .await
        .map_err(Error::kube(format!(
            "writing the caBundle of MutatingWebhookConfiguration {name}"
        )))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(bundles: &[Option<&str>]) -> Result<MutatingWebhookConfiguration, serde_json::Error> {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client = json!({"url": "https://127.0.0.1:9443/mutate-pods"});
                if let Some(b) = b {
                    client["caBundle"] = serde_json::to_value(ByteString(b.as_bytes().to_vec()))?;
                }
                Ok(
                    json!({"name": format!("w{i}.ipa.shafinhasnat.me"), "clientConfig": client,
                          "sideEffects": "None", "admissionReviewVersions": ["v1"]}),
                )
            })
            .collect::<Result<_, serde_json::Error>>()?;
        serde_json::from_value(
            json!({"metadata": {"name": "ipa-controller"}, "webhooks": webhooks}),
        )
    }

    #[test]
    fn only_webhooks_without_the_bundle_are_patched_each_behind_a_name_test()
    -> Result<(), serde_json::Error> {
        let c = config(&[Some("PEM"), None, Some("OLD")])?;
        let patch = ca_bundle_patch(&c, b"PEM")
            .map(serde_json::to_value)
            .transpose()?;
        assert_eq!(
            patch,
            Some(json!([
                {"op": "test", "path": "/webhooks/1/name", "value": "w1.ipa.shafinhasnat.me"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "UEVN"},
                {"op": "test", "path": "/webhooks/2/name", "value": "w2.ipa.shafinhasnat.me"},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "UEVN"},
            ]))
        );
        assert!(ca_bundle_patch(&config(&[Some("PEM")])?, b"PEM").is_none());
        Ok(())
    }
}
