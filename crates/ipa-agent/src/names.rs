//! Names from requests, bounded as Kubernetes bounds them: a namespace and a container name are DNS-1123 labels
//! (≤ 63 characters), a Deployment name a DNS-1123 subdomain (≤ 253). Anything else is refused with a 4xx before
//! it reaches the prompt, the decision ring, the dashboard or a log line — a 1 MB "name" must not be stored, and a
//! newline in one must not forge a log entry.

use ipa_core::{MetricsSnapshot, Policy};

/// Longest DNS-1123 label.
pub const MAX_LABEL: usize = 63;
/// Longest DNS-1123 subdomain.
pub const MAX_SUBDOMAIN: usize = 253;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// Dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_SUBDOMAIN && name.split('.').all(is_dns1123_label)
}

/// A short description of a refused name: its length and a bounded, printable prefix (never the whole input).
fn shown(name: &str) -> String {
    let prefix: String = name
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("{prefix:?} ({} bytes)", name.len())
}

/// Checks every name in a decision request.
pub fn check_request(snapshot: &MetricsSnapshot, policy: &Policy) -> Result<(), String> {
    let target = &snapshot.target;
    if !is_dns1123_label(&target.namespace) {
        return Err(format!(
            "target.namespace {} is not a DNS-1123 label (lowercase alphanumerics and '-', at most {MAX_LABEL})",
            shown(&target.namespace)
        ));
    }
    if !is_dns1123_subdomain(&target.deployment) {
        return Err(format!(
            "target.deployment {} is not a DNS-1123 subdomain (at most {MAX_SUBDOMAIN} characters)",
            shown(&target.deployment)
        ));
    }
    let containers = snapshot
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .chain(policy.containers.iter().flatten().map(String::as_str));
    for name in containers {
        if !is_dns1123_label(name) {
            return Err(format!(
                "container name {} is not a DNS-1123 label (at most {MAX_LABEL} characters)",
                shown(name)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "web", "api-v2", "0abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Web",
            "a_b",
            "a.b",
            "a\nb",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("web.v2"));
        assert!(is_dns1123_subdomain(&format!(
            "{}.{}",
            "a".repeat(63),
            "b".repeat(63)
        )));
        let long = vec!["a".repeat(63); 4].join(".") + ".ab"; // 257
        assert!(!is_dns1123_subdomain(&long));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(".a"));
        assert!(!is_dns1123_subdomain(&"a".repeat(1 << 20)));
    }

    #[test]
    fn refusals_never_echo_the_whole_name() {
        let huge = "x".repeat(1 << 20);
        let text = shown(&huge);
        assert!(text.len() < 80, "{text}");
        assert!(text.contains("1048576 bytes"));
        assert!(!shown("a\nb").contains('\n'));
    }
}
