//! Tenant isolation: which namespaces an IPA may act on.
//!
//! The controller runs with cluster-wide RBAC (it must, to serve IPAs in every namespace), so RBAC alone does not
//! stop an IPA in namespace A from listing a Deployment in namespace B. This rule does: an IPA acts only on
//! Deployments in its own namespace, unless the target namespace opts in with the annotation
//! [`ALLOW_FROM_ANNOTATION`] naming the IPA's namespace (or `*`), or the controller was started with
//! `--allow-cross-namespace` (an explicit admin opt-in). A refused target is never read, never sent to an agent and
//! never written to; the refusal shows as a condition and a Warning Event on the IPA.

/// Annotation on a Namespace: comma-separated IPA namespaces allowed to manage its Deployments, or `*`.
pub const ALLOW_FROM_ANNOTATION: &str = "ipa.shafinhasnat.me/allow-from";

/// Condition reason (and Event reason) for a refused cross-namespace target.
pub const REFUSED_REASON: &str = "CrossNamespaceRefused";

/// Why a target may be managed, or that it may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The target is in the IPA's own namespace.
    SameNamespace,
    /// The target namespace's annotation names the IPA's namespace (or `*`).
    OptedIn,
    /// The controller was started with `--allow-cross-namespace`.
    AdminAllowed,
    /// Another namespace that has not opted in: not read, not touched.
    Refused,
}

impl Access {
    pub fn allowed(self) -> bool {
        self != Self::Refused
    }
}

/// Decides whether an IPA in `ipa_namespace` may manage a Deployment in `target_namespace`.
///
/// `allow_from` is the value of [`ALLOW_FROM_ANNOTATION`] on the target Namespace (`None` when absent or when the
/// Namespace could not be read — an unreadable namespace has not opted in). `admin_allows` is the controller's
/// `--allow-cross-namespace`.
pub fn access(
    ipa_namespace: &str,
    target_namespace: &str,
    allow_from: Option<&str>,
    admin_allows: bool,
) -> Access {
    if ipa_namespace == target_namespace {
        return Access::SameNamespace;
    }
    if admin_allows {
        return Access::AdminAllowed;
    }
    let opted_in = allow_from.is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|entry| entry == "*" || (!entry.is_empty() && entry == ipa_namespace))
    });
    if opted_in {
        Access::OptedIn
    } else {
        Access::Refused
    }
}

/// The message of a refusal: which target, and the two ways to allow it. Names only, nothing read from B.
pub fn refusal_message(ipa_namespace: &str, target_namespace: &str, deployment: &str) -> String {
    format!(
        "deployment {target_namespace}/{deployment} is outside this IPA's namespace {ipa_namespace} and was not read \
         or changed; to allow it, annotate namespace {target_namespace} with {ALLOW_FROM_ANNOTATION}={ipa_namespace} \
         (or start the controller with --allow-cross-namespace)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_is_always_allowed() {
        assert_eq!(access("a", "a", None, false), Access::SameNamespace);
        assert_eq!(access("a", "a", Some(""), false), Access::SameNamespace);
    }

    #[test]
    fn other_namespaces_are_refused_by_default() {
        assert_eq!(access("a", "b", None, false), Access::Refused);
        assert_eq!(access("a", "b", Some(""), false), Access::Refused);
        assert_eq!(access("a", "b", Some(" , ,"), false), Access::Refused);
        assert!(!access("a", "b", None, false).allowed());
    }

    #[test]
    fn the_annotation_must_name_the_ipa_namespace_exactly() {
        assert_eq!(access("a", "b", Some("a"), false), Access::OptedIn);
        assert_eq!(access("a", "b", Some("x, a ,y"), false), Access::OptedIn);
        assert_eq!(access("a", "b", Some("*"), false), Access::OptedIn);
        assert_eq!(access("a", "b", Some("x,*"), false), Access::OptedIn);
        // No prefixes, suffixes, globs or case folding.
        assert_eq!(access("team", "b", Some("team-a"), false), Access::Refused);
        assert_eq!(access("team-a", "b", Some("team"), false), Access::Refused);
        assert_eq!(access("a", "b", Some("A"), false), Access::Refused);
        assert_eq!(access("a", "b", Some("a*"), false), Access::Refused);
        assert_eq!(access("a", "b", Some("b"), false), Access::Refused);
    }

    #[test]
    fn the_admin_flag_allows_everything() {
        assert_eq!(access("a", "b", None, true), Access::AdminAllowed);
        assert_eq!(access("a", "a", None, true), Access::SameNamespace);
    }

    #[test]
    fn the_message_says_how_to_opt_in() {
        let m = refusal_message("a", "b", "web");
        assert!(m.contains("b/web"));
        assert!(m.contains("ipa.shafinhasnat.me/allow-from=a"));
        assert!(m.contains("--allow-cross-namespace"));
    }
}
