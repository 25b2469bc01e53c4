//! Events: a Normal one on the Deployment for each change, a Warning on the IPA for each refusal. A failed
//! publish is logged and never fails the cycle.

use ipa_core::Recommendation;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::crd::IPA;
use crate::reconcile::Context;

/// Events' notes are cut to what `kubectl describe` shows well (the API allows 1 kB).
const NOTE_CHARS: usize = 1000;

async fn publish(ctx: &Context, event: Event, object: &ObjectReference) {
    ctx.metrics.kube_request("create");
    if let Err(e) = ctx.recorder.publish(&event, object).await {
        warn!(error = %e, "could not publish event");
    }
}

/// A change made to a Deployment (`Scaled`, `Resized`), with the source and rationale of the decision.
pub async fn changed(
    ctx: &Context,
    deployment: &ObjectReference,
    (reason, action): (&str, &str),
    what: &str,
    rec: &Recommendation,
) {
    let note = format!("{what} (source {}): {}", rec.source.as_str(), rec.rationale);
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note.chars().take(NOTE_CHARS).collect()),
        action: action.into(),
        secondary: None,
    };
    publish(ctx, event, deployment).await;
}

/// Something about a Deployment's pods that needs attention (`ResizeInfeasible`, `Recreated`).
pub async fn warn(
    ctx: &Context,
    object: &ObjectReference,
    (reason, action): (&str, &str),
    note: &str,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(NOTE_CHARS).collect()),
        action: action.into(),
        secondary: None,
    };
    publish(ctx, event, object).await;
}

/// Something the IPA asked for was refused.
pub async fn warn_ipa(ctx: &Context, ipa: &IPA, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(NOTE_CHARS).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    publish(ctx, event, &ipa.object_ref(&())).await;
}
