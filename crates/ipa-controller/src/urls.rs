//! Which URLs an IPA may point the controller at (`prometheusUri`, `llmAgent`).
//!
//! Anyone who may create an `IPA` chooses these URLs, and the controller sends them snapshots (and possibly an
//! agent token) from inside the cluster: without a rule that is server-side request forgery. So a URL must be
//! `http`/`https`, carry no user-info, and match the allow-list:
//!
//! - `--allowed-url-prefix` entries (repeatable, or comma-separated in `IPA_ALLOWED_URL_PREFIXES`): an entry with
//!   `://` is a URL prefix (`https://prometheus.example.com/` — compared on the parsed, normalised URL and on its
//!   origin); an entry without is a host (`prometheus.monitoring.svc`) or a host suffix (`*.internal.example`),
//!   any port, either scheme.
//! - with no entries, the default: cluster-internal service hosts only (`*.svc`, `*.svc.cluster.local`, hosts
//!   without a dot) and loopback (`localhost`, `127.0.0.1`, `[::1]`), which a controller run outside the cluster
//!   (the test bed, `make demo`) uses.
//! - always: the agent configured at install (`--agent-url`).
//!
//! The check is a pure function of the URL text: nothing is resolved or probed.

use std::net::IpAddr;

use reqwest::Url;

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// A normalised URL prefix: the candidate has the same origin and its normalised text starts with it.
    Prefix(Url),
    /// A host, exactly (lowercase, no trailing dot).
    Host(String),
    /// A host suffix from `*.example.com`: stored as `.example.com`.
    Suffix(String),
}

/// The allow-list, built once from the controller's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPolicy {
    rules: Vec<Rule>,
    /// No `--allowed-url-prefix` given: cluster-internal hosts and loopback.
    internal_default: bool,
    /// The agent configured at install, always allowed (and the only place its token is sent).
    install_agent: Option<Url>,
}

/// Why a URL was refused. Never contains the URL or anything learned from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is not a valid absolute URL")]
    Invalid,
    #[error("must use http or https")]
    Scheme,
    #[error("must not contain a user name or password")]
    UserInfo,
    #[error("is not in the controller's allowed URLs (--allowed-url-prefix)")]
    NotAllowed,
}

fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A Service host in its shortest form: `svc.ns`, `svc.ns.svc` and `svc.ns.svc.cluster.local` are one host.
fn service_host(host: &str) -> String {
    let host = normalise_host(host);
    for suffix in [".svc.cluster.local", ".svc"] {
        if let Some(short) = host.strip_suffix(suffix) {
            return short.to_string();
        }
    }
    host
}

fn parse(text: &str) -> Result<Url, Refusal> {
    let url = Url::parse(text.trim()).map_err(|_| Refusal::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::UserInfo);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Refusal::Invalid);
    }
    Ok(url)
}

fn ip_of(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(normalise_host) == b.host_str().map(normalise_host)
        && a.port_or_known_default() == b.port_or_known_default()
}

impl UrlPolicy {
    /// Builds the policy from `--allowed-url-prefix` entries and `--agent-url`. An entry that is not a valid
    /// http(s) URL or host is an error (a typo must not silently allow nothing — or everything).
    pub fn new(entries: &[String], install_agent: Option<&str>) -> Result<Self, String> {
        let mut rules = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry.contains("://") {
                let url =
                    parse(entry).map_err(|r| format!("--allowed-url-prefix {entry:?} {r}"))?;
                rules.push(Rule::Prefix(url));
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains(['/', ':', '*', '@']) {
                    return Err(format!(
                        "--allowed-url-prefix {entry:?} is not a host pattern"
                    ));
                }
                rules.push(Rule::Suffix(format!(".{}", normalise_host(suffix))));
            } else {
                if entry.contains(['/', '*', '@']) {
                    return Err(format!(
                        "--allowed-url-prefix {entry:?} is neither a URL (with ://) nor a host"
                    ));
                }
                rules.push(Rule::Host(normalise_host(entry)));
            }
        }
        let install_agent = install_agent
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| parse(u).map_err(|r| format!("--agent-url {r}")))
            .transpose()?;
        Ok(Self {
            internal_default: rules.is_empty(),
            rules,
            install_agent,
        })
    }

    /// Checks `text`; on success returns the parsed URL.
    pub fn check(&self, text: &str) -> Result<Url, Refusal> {
        let url = parse(text)?;
        if self.is_install_agent(&url) || self.allows(&url) {
            Ok(url)
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    /// Whether `url` is the agent configured at install (same scheme and port; a Service host in any of its
    /// forms). Only such requests get the install's agent token.
    pub fn is_install_agent(&self, url: &Url) -> bool {
        let Some(agent) = &self.install_agent else {
            return false;
        };
        agent.scheme() == url.scheme()
            && agent.port_or_known_default() == url.port_or_known_default()
            && agent.host_str().map(service_host) == url.host_str().map(service_host)
    }

    fn allows(&self, url: &Url) -> bool {
        let host = url.host_str().map(normalise_host).unwrap_or_default();
        if self.internal_default && internal_host(&host) {
            return true;
        }
        self.rules.iter().any(|rule| match rule {
            Rule::Prefix(prefix) => {
                same_origin(prefix, url) && url.as_str().starts_with(prefix.as_str())
            }
            Rule::Host(h) => match ip_of(&host) {
                Some(ip) => ip_of(h) == Some(ip),
                None => host == *h,
            },
            Rule::Suffix(s) => ip_of(&host).is_none() && host.ends_with(s.as_str()),
        })
    }
}

/// The default: a cluster-internal Service name, or loopback.
fn internal_host(host: &str) -> bool {
    match ip_of(host) {
        Some(IpAddr::V4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(IpAddr::V6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => {
            host == "localhost"
                || host.ends_with(".svc")
                || host.ends_with(".svc.cluster.local")
                || (!host.contains('.') && !host.contains(':') && !host.is_empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str], agent: Option<&str>) -> UrlPolicy {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        UrlPolicy::new(&entries, agent).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn default_allows_cluster_services_and_loopback_only() {
        let p = policy(&[], None);
        for ok in [
            "http://prometheus-server.default.svc",
            "http://prometheus-server.default.svc:9090/prefix",
            "https://prometheus.monitoring.svc.cluster.local/",
            "http://prometheus.monitoring.svc.cluster.local.:9090",
            "http://prometheus:9090",
            "http://127.0.0.1:41234",
            "http://localhost:8080",
            "http://[::1]:8080",
            "HTTP://Prometheus.Default.SVC",
        ] {
            assert!(p.check(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("https://ipaagent.shafinhasnat.me", Refusal::NotAllowed),
            (
                "http://169.254.169.254/latest/meta-data",
                Refusal::NotAllowed,
            ),
            ("http://10.0.0.5:9090", Refusal::NotAllowed),
            ("http://127.0.0.2:80", Refusal::NotAllowed),
            ("http://2130706432", Refusal::NotAllowed), // 127.0.0.0 spelled as a number
            ("http://[fd00::1]:80", Refusal::NotAllowed),
            ("http://svc.evil.com", Refusal::NotAllowed),
            ("http://evil.com/.svc", Refusal::NotAllowed),
            ("http://prom.default.svc@evil.com/", Refusal::UserInfo),
            ("http://user:pw@prom.default.svc/", Refusal::UserInfo),
            ("file:///etc/passwd", Refusal::Scheme),
            ("gopher://prom.default.svc", Refusal::Scheme),
            ("ftp://prom", Refusal::Scheme),
            ("prom.default.svc:9090", Refusal::Scheme),
            ("not a url", Refusal::Invalid),
            ("", Refusal::Invalid),
        ] {
            assert_eq!(p.check(bad).err(), Some(why), "{bad}");
        }
        // The numeric spelling of loopback is loopback.
        assert!(p.check("http://2130706433:80").is_ok());
    }

    #[test]
    fn prefixes_replace_the_default_and_match_on_boundaries() {
        let p = policy(
            &[
                "https://prom.example.com/",
                "http://agent.example.com:8000/ipa",
            ],
            None,
        );
        assert!(p.check("https://prom.example.com").is_ok());
        assert!(p.check("https://prom.example.com/api").is_ok());
        assert!(p.check("http://agent.example.com:8000/ipa").is_ok());
        assert!(p.check("http://agent.example.com:8000/ipa/v2").is_ok());
        for bad in [
            "http://prom.example.com/",       // other scheme
            "https://prom.example.com:8443/", // other port
            "https://prom.example.com.evil.net/",
            "https://prom.example.com@evil.net/",
            "http://agent.example.com:8000/other",
            "http://agent.example.com/ipa",
            "http://prometheus.default.svc", // the default no longer applies
            "http://127.0.0.1:9090",
        ] {
            assert!(p.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_and_suffixes() {
        let p = policy(
            &["prometheus.monitoring", "*.corp.example", "10.0.0.5"],
            None,
        );
        assert!(p.check("http://prometheus.monitoring:9090").is_ok());
        assert!(p.check("https://PROMETHEUS.monitoring/").is_ok());
        assert!(p.check("https://a.b.corp.example/").is_ok());
        assert!(p.check("http://10.0.0.5:9090").is_ok());
        assert!(p.check("http://corp.example").is_err());
        assert!(p.check("http://xcorp.example").is_err());
        assert!(p.check("http://prometheus.monitoring.evil").is_err());
        assert!(p.check("http://10.0.0.6").is_err());
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in [
            "ftp://x",
            "http://u:p@x/",
            "*.",
            "a/b",
            "*.a/b",
            "not a url://x",
        ] {
            assert!(UrlPolicy::new(&[bad.to_string()], None).is_err(), "{bad}");
        }
        assert!(UrlPolicy::new(&[], Some("file:///x")).is_err());
    }

    #[test]
    fn the_install_agent_is_always_allowed_in_any_service_form() {
        let p = policy(
            &["https://prom.example.com/"],
            Some("http://ipa-agent.ipa-system"),
        );
        for ok in [
            "http://ipa-agent.ipa-system",
            "http://ipa-agent.ipa-system.svc/",
            "http://ipa-agent.ipa-system.svc.cluster.local:80",
        ] {
            let url = p.check(ok).unwrap_or_else(|e| unreachable!("{ok}: {e}"));
            assert!(p.is_install_agent(&url), "{ok}");
        }
        for other in [
            "https://ipa-agent.ipa-system",
            "http://ipa-agent.ipa-system:8000",
            "http://ipa-agent.other",
            "http://ipa-agent.ipa-system.evil.com",
        ] {
            assert!(p.check(other).is_err(), "{other}");
        }
        // Allowed by the default, but not the install's agent: no token for it.
        let p = policy(&[], Some("http://ipa-agent.ipa-system"));
        let other = p
            .check("http://evil-agent.team-a.svc")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!p.is_install_agent(&other));
    }
}
