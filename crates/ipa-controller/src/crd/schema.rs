//! What the apiserver checks on an IPA beyond the Rust types: bounds, CEL rules (`x-kubernetes-validations`)
//! and the descriptions `kubectl explain` shows.
//!
//! The rule of thumb: whatever `ipa_core::Policy::resolve` or `IpaMetadata::interval` would silently clamp, the
//! CRD refuses, so what a user applies is what runs. Single-field ranges are OpenAPI `minimum`/`maximum` (no CEL
//! cost, the apiserver's standard message names the field and the bound); CEL is used where one field is
//! compared with another, and for durations and quantities, which OpenAPI cannot read. Everything here is
//! schema-only, applied by schemars transforms, so `ipa_core` stays free of Kubernetes concerns.
//!
//! Every value the apiserver accepts must also deserialize into [`super::IPA`]: one object the controller
//! cannot parse would fail its whole watch. Hence the upper bounds on quantities (the core keeps them in
//! `u64`) and the duration range (kube's `Duration` parser panics on overflow).

use ipa_core::policy::HARD_MAX_REPLICAS;
use serde_json::{Map, Value, json};

use super::{DEFAULT_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS};

/// Most `ipaGroup` items one IPA may list: twice the scale benchmark's largest IPA (docs/operator.md#scale). The
/// status keeps a few hundred bytes per target even when trimmed, and the whole object must fit etcd's 1.5 MiB.
pub const MAX_TARGETS: usize = 2000;

/// The message of the rule that refuses `minReplicas > maxReplicas`.
pub const REPLICAS_ORDER_MESSAGE: &str = "minReplicas must not be greater than maxReplicas";
/// The message of the rule that refuses `minCpu > maxCpu`.
pub const CPU_ORDER_MESSAGE: &str = "minCpu must not be greater than maxCpu";
/// The message of the rule that refuses `minMemory > maxMemory`.
pub const MEMORY_ORDER_MESSAGE: &str = "minMemory must not be greater than maxMemory";

/// A Go duration (`time.ParseDuration`, which both CEL's `duration()` and kube's `Duration` follow), checked
/// before `duration()` is called so that a typo gets the rule's message rather than an evaluation error.
/// `µs` comes in both spellings Go accepts (micro sign and Greek mu).
const GO_DURATION: &str =
    "^[-+]?(0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|\u{b5}s|\u{3bc}s|ms|s|m|h))+)$";
/// Long enough for any duration within the bounds (`59m59.999999999s` is 16 characters); the bound also keeps
/// the CEL cost estimate of `matches` small.
const DURATION_MAX_LENGTH: u64 = 32;

/// DNS-1123 label (namespaces, container names).
const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// DNS-1123 subdomain (Deployment and Ingress names).
const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The message of the rule on `interval` or `syncPeriod`.
pub fn duration_range_message(field: &str) -> String {
    format!(
        "{field} must be a Go duration from {MIN_INTERVAL_SECONDS}s to {}h, such as 15s or 2m",
        MAX_INTERVAL_SECONDS / 3600
    )
}

/// The message of the rule that refuses a `syncPeriod` longer than the `interval`.
pub fn sync_period_order_message() -> String {
    format!("syncPeriod must not be longer than interval ({DEFAULT_INTERVAL_SECONDS}s when unset)")
}

/// `spec.metadata`: the two durations, each in range, and the fast loop no slower than the advisory one.
pub(super) fn metadata(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(properties) = properties_mut(object) {
        // Without a bound the apiserver estimates the CEL rules on every item for a list as long as a request
        // can hold, and refuses the CRD for cost.
        constrain(
            properties,
            "ipaGroup",
            json!({"maxItems": MAX_TARGETS}),
            vec![],
        );
        for field in ["interval", "syncPeriod"] {
            constrain(
                properties,
                field,
                json!({"maxLength": DURATION_MAX_LENGTH}),
                vec![rule(
                    &duration_in_range("self"),
                    &duration_range_message(field),
                    None,
                )],
            );
        }
        keep_field_descriptions(properties);
    }
    // A malformed duration is its own rule's to report; this one passes it rather than fail to evaluate.
    let interval = format!(
        "(has(self.interval) ? duration(self.interval) : duration('{DEFAULT_INTERVAL_SECONDS}s'))"
    );
    add_rules(
        object,
        vec![rule(
            &format!(
                "!has(self.syncPeriod) || !{} || (has(self.interval) && !{}) || duration(self.syncPeriod) <= {interval}",
                is_duration("self.syncPeriod"),
                is_duration("self.interval"),
            ),
            &sync_period_order_message(),
            Some(".syncPeriod"),
        )],
    );
}

/// One `ipaGroup[]` item: the target's names, the policy's bounds, and min ≤ max for replicas, CPU and memory.
pub(super) fn group(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(properties) = properties_mut(object) {
        // The loops' periods are the IPA's (`spec.metadata.interval`, `syncPeriod`): a per-group copy would be a
        // second, disagreeing source, so the schema does not offer one (the apiserver prunes it).
        properties.remove("intervalSeconds");
        properties.remove("syncPeriodSeconds");
        keep_field_descriptions(properties);
        name_fields(properties);
        numeric_bounds(properties);
        quantity_fields(properties);
    }
    add_rules(
        object,
        vec![
            rule(
                "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                REPLICAS_ORDER_MESSAGE,
                Some(".minReplicas"),
            ),
            quantity_order("minCpu", "maxCpu", CPU_ORDER_MESSAGE),
            quantity_order("minMemory", "maxMemory", MEMORY_ORDER_MESSAGE),
        ],
    );
}

/// Kubernetes names: the target, its ingress, its namespace and the managed containers.
fn name_fields(properties: &mut Map<String, Value>) {
    let subdomain = json!({"minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN});
    constrain(properties, "deployment", subdomain.clone(), vec![]);
    constrain(properties, "ingress", subdomain, vec![]);
    constrain(
        properties,
        "namespace",
        json!({"minLength": 1, "maxLength": 63, "pattern": DNS_LABEL}),
        vec![],
    );
    if let Some(items) = properties
        .get_mut("containers")
        .and_then(|containers| containers.get_mut("items"))
        .and_then(Value::as_object_mut)
    {
        items.extend(object_of(json!({"maxLength": 63, "pattern": DNS_LABEL})));
    }
}

/// The bounds `Policy::resolve` clamps to, for the replica counts, ratios and scaling rules.
fn numeric_bounds(properties: &mut Map<String, Value>) {
    for (field, minimum, maximum) in [
        ("minReplicas", json!(1), json!(HARD_MAX_REPLICAS)),
        ("maxReplicas", json!(1), json!(HARD_MAX_REPLICAS)),
        ("targetUtilization", json!(0.05), json!(1.0)),
        ("tolerance", json!(0.0), json!(0.5)),
        ("resizeThreshold", json!(0.0), json!(10.0)),
        ("startupSeconds", json!(0), json!(3600)),
    ] {
        constrain(
            properties,
            field,
            json!({"minimum": minimum, "maximum": maximum}),
            vec![],
        );
    }
    for direction in ["scaleUp", "scaleDown"] {
        if let Some(rules) = properties
            .get_mut(direction)
            .and_then(object_variant_mut)
            .and_then(properties_mut)
        {
            for (field, bounds) in [
                ("stabilizationWindowSeconds", json!({"maximum": 3600})),
                ("maxPods", json!({"minimum": 1})),
                ("maxPercent", json!({"minimum": 1})),
                ("periodSeconds", json!({"minimum": 1, "maximum": 1800})),
            ] {
                constrain(rules, field, bounds, vec![]);
            }
        }
    }
}

/// CPU and memory bounds: quantity strings within a range, checked by CEL.
fn quantity_fields(properties: &mut Map<String, Value>) {
    for (field, what, at_most, examples) in [
        ("minCpu", "CPU", "1M", "250m or 2"),
        ("maxCpu", "CPU", "1M", "250m or 2"),
        ("minMemory", "memory", "1Ei", "256Mi or 4Gi"),
        ("maxMemory", "memory", "1Ei", "256Mi or 4Gi"),
    ] {
        // The field's doc says what the bound means; the type's (a quantity, how to write one) would be lost.
        let description = properties
            .get(field)
            .and_then(|property| property.get("description"))
            .and_then(Value::as_str)
            .map(|doc| json!({"description": format!("{}. A {what} quantity string such as {examples}.", doc.trim_end_matches('.'))}));
        constrain(
            properties,
            field,
            description.unwrap_or_else(|| json!({})),
            vec![rule(
                &format!(
                    "isQuantity(self) && quantity(self).compareTo(quantity('0')) >= 0 && \
                     quantity(self).compareTo(quantity('{at_most}')) <= 0"
                ),
                &format!(
                    "{field} must be a {what} quantity from 0 to {at_most}, such as {examples} (quote numbers)"
                ),
                None,
            )],
        );
    }
}

/// `status`: the seed's Go controller writes its outcome (`Success` or an error) to `status.status`; without
/// the field in the schema the apiserver would prune it. IPA neither reads nor writes it.
pub(super) fn status(schema: &mut schemars::Schema) {
    if let Some(properties) = schema.as_object_mut().and_then(properties_mut) {
        properties.insert(
            "status".into(),
            json!({
                "type": "string",
                "description": "Written by the seed's Go controller (`Success` or its last error); IPA leaves it alone.",
            }),
        );
    }
}

/// `min ≤ max` for two optional quantities. An unparsable one is its own rule's to report; this rule passes
/// it rather than fail to evaluate.
fn quantity_order(min: &str, max: &str, message: &str) -> Value {
    rule(
        &format!(
            "!has(self.{min}) || !has(self.{max}) || !isQuantity(self.{min}) || !isQuantity(self.{max}) || \
             quantity(self.{min}).compareTo(quantity(self.{max})) <= 0"
        ),
        message,
        Some(&format!(".{min}")),
    )
}

/// CEL: `value` (a string expression) is a Go duration.
fn is_duration(value: &str) -> String {
    format!("{value}.matches('{GO_DURATION}')")
}

/// CEL: `value` is a Go duration within the interval's bounds.
fn duration_in_range(value: &str) -> String {
    format!(
        "{} && duration({value}) >= duration('{MIN_INTERVAL_SECONDS}s') && duration({value}) <= duration('{MAX_INTERVAL_SECONDS}s')",
        is_duration(value)
    )
}

/// One `x-kubernetes-validations` entry. `field_path` points the error at a field rather than the object.
fn rule(expression: &str, message: &str, field_path: Option<&str>) -> Value {
    let mut rule = json!({"rule": expression, "message": message});
    if let (Some(path), Some(object)) = (field_path, rule.as_object_mut()) {
        object.insert("fieldPath".into(), path.into());
    }
    rule
}

/// Appends rules to a schema object's `x-kubernetes-validations`.
fn add_rules(object: &mut Map<String, Value>, rules: Vec<Value>) {
    if rules.is_empty() {
        return;
    }
    let entry = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(existing) = entry.as_array_mut() {
        existing.extend(rules);
    }
}

/// Adds keywords (replacing any of the same name) and rules to one property, when the schema has it.
fn constrain(properties: &mut Map<String, Value>, name: &str, keywords: Value, rules: Vec<Value>) {
    if let Some(property) = properties.get_mut(name).and_then(Value::as_object_mut) {
        property.extend(object_of(keywords));
        add_rules(property, rules);
    }
}

/// An optional enum or object is wrapped as `anyOf: [its type, null]` with the field's doc on the wrapper, and
/// kube, when it unwraps it, lets the type's doc replace the field's. Copying the field's doc into the variant
/// keeps what `kubectl explain` shows about this field rather than about the type.
fn keep_field_descriptions(properties: &mut Map<String, Value>) {
    for property in properties.values_mut().filter_map(Value::as_object_mut) {
        let Some(description) = property.get("description").cloned() else {
            continue;
        };
        let variants = property.get_mut("anyOf").and_then(Value::as_array_mut);
        for variant in variants
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            if !is_null_schema(variant) {
                variant.insert("description".into(), description.clone());
            }
        }
    }
}

/// The object schema of a property: itself, or its non-null `anyOf` variant when it is optional.
fn object_variant_mut(property: &mut Value) -> Option<&mut Map<String, Value>> {
    let is_wrapped = property.get("anyOf").is_some();
    let object = property.as_object_mut()?;
    if !is_wrapped {
        return Some(object);
    }
    object
        .get_mut("anyOf")?
        .as_array_mut()?
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|variant| !is_null_schema(variant))
}

fn is_null_schema(schema: &Map<String, Value>) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

fn properties_mut(object: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    object.get_mut("properties").and_then(Value::as_object_mut)
}

fn object_of(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IPA;
    use kube::CustomResourceExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The CRD's `openAPIV3Schema` as JSON.
    fn crd_schema() -> Result<Value, Box<dyn std::error::Error>> {
        let crd = serde_json::to_value(IPA::crd())?;
        Ok(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone())
    }

    fn rules(schema: &Value) -> Vec<(String, String, Option<String>)> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| {
                        let text = |key: &str| r[key].as_str().map(str::to_string);
                        (
                            text("rule").unwrap_or_default(),
                            text("message").unwrap_or_default(),
                            text("fieldPath"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn group_rules_compare_min_with_max() -> TestResult {
        let schema = crd_schema()?;
        let group = &schema["properties"]["spec"]["properties"]["metadata"]["properties"]["ipaGroup"]
            ["items"];
        let rules = rules(group);
        for (min, max, message) in [
            ("minReplicas", "maxReplicas", REPLICAS_ORDER_MESSAGE),
            ("minCpu", "maxCpu", CPU_ORDER_MESSAGE),
            ("minMemory", "maxMemory", MEMORY_ORDER_MESSAGE),
        ] {
            let (rule, _, field_path) = rules
                .iter()
                .find(|(_, m, _)| m == message)
                .ok_or(format!("no rule with message {message:?}"))?;
            // Both optional: each side is guarded by has(), so an unset bound never fails the rule.
            for guard in [format!("!has(self.{min})"), format!("!has(self.{max})")] {
                assert!(rule.contains(&guard), "{rule} lacks {guard}");
            }
            assert_eq!(field_path.as_deref(), Some(format!(".{min}").as_str()));
            assert!(message.contains(min) && message.contains(max));
        }
        for quantity in ["minCpu", "maxCpu", "minMemory", "maxMemory"] {
            let property = &group["properties"][quantity];
            let [(rule, message, _)] = rules_of(property)?;
            assert!(rule.starts_with("isQuantity(self) && "), "{rule}");
            assert!(message.starts_with(quantity), "{message}");
        }
        Ok(())
    }

    fn rules_of(schema: &Value) -> Result<[(String, String, Option<String>); 1], String> {
        rules(schema)
            .try_into()
            .map_err(|all: Vec<_>| format!("{} rules", all.len()))
    }

    #[test]
    fn durations_are_checked_in_range_and_in_order() -> TestResult {
        let schema = crd_schema()?;
        let metadata = &schema["properties"]["spec"]["properties"]["metadata"];
        for field in ["interval", "syncPeriod"] {
            let property = &metadata["properties"][field];
            assert_eq!(property["maxLength"], json!(DURATION_MAX_LENGTH));
            let [(rule, message, _)] = rules_of(property)?;
            // The format is checked before duration() is called: && short-circuits in CEL.
            assert!(rule.starts_with("self.matches('^"), "{rule}");
            assert!(rule.contains("duration(self) >= duration('5s')"), "{rule}");
            assert!(
                rule.contains("duration(self) <= duration('3600s')"),
                "{rule}"
            );
            assert_eq!(*message, duration_range_message(field));
        }
        let order = rules(metadata);
        let (rule, _, field_path) = order
            .iter()
            .find(|(_, m, _)| *m == sync_period_order_message())
            .ok_or("no syncPeriod ≤ interval rule")?;
        assert!(rule.starts_with("!has(self.syncPeriod) || "), "{rule}");
        assert!(rule.contains("duration('60s')"), "{rule}");
        assert_eq!(field_path.as_deref(), Some(".syncPeriod"));
        assert_eq!(
            metadata["properties"]["ipaGroup"]["maxItems"],
            json!(MAX_TARGETS)
        );
        Ok(())
    }

    #[test]
    fn ranges_are_the_ones_the_core_clamps_to() -> TestResult {
        let schema = crd_schema()?;
        let group = &schema["properties"]["spec"]["properties"]["metadata"]["properties"]["ipaGroup"]
            ["items"]["properties"];
        // The CRD type holds bounds as f64.
        let range = |field: &str| {
            (
                group[field]["minimum"].as_f64(),
                group[field]["maximum"].as_f64(),
            )
        };
        let hard_max = f64::from(HARD_MAX_REPLICAS);
        assert_eq!(range("targetUtilization"), (Some(0.05), Some(1.0)));
        assert_eq!(range("tolerance"), (Some(0.0), Some(0.5)));
        assert_eq!(range("minReplicas"), (Some(1.0), Some(hard_max)));
        assert_eq!(range("maxReplicas"), (Some(1.0), Some(hard_max)));
        let period = &group["scaleDown"]["properties"]["periodSeconds"];
        assert_eq!(period["minimum"].as_f64(), Some(1.0));
        // The sanitised values and the schema agree on a policy at the bounds.
        let at_bounds = ipa_core::Policy {
            min_replicas: Some(1),
            max_replicas: Some(HARD_MAX_REPLICAS),
            target_utilization: Some(0.05),
            tolerance: Some(0.5),
            ..ipa_core::Policy::default()
        };
        let resolved = at_bounds.resolve();
        assert_eq!(
            (resolved.min_replicas, resolved.max_replicas),
            (1, HARD_MAX_REPLICAS)
        );
        assert_eq!(
            (resolved.target_utilization, resolved.tolerance),
            (0.05, 0.5)
        );
        // Per-IPA settings are not offered per group.
        assert!(group.get("intervalSeconds").is_none());
        assert!(group.get("syncPeriodSeconds").is_none());
        Ok(())
    }

    /// Whatever the rules let through, the controller can read: a value the apiserver stores but serde refuses
    /// would fail the controller's whole watch.
    #[test]
    fn largest_accepted_values_deserialize() -> TestResult {
        assert!("1M".parse::<ipa_core::CpuMillis>().is_ok());
        assert!("1Ei".parse::<ipa_core::Bytes>().is_ok());
        for duration in ["1h", "59m59.999999999s", "5000000\u{b5}s", "+5s", ".5h"] {
            let parsed: kube::core::Duration = duration.parse()?;
            assert!(std::time::Duration::from(parsed) <= std::time::Duration::from_secs(3600));
        }
        Ok(())
    }

    /// Every spec field, at any depth, says what it is for `kubectl explain`.
    #[test]
    fn every_spec_field_has_a_description() -> TestResult {
        fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
            let description = schema["description"].as_str().unwrap_or_default();
            if description.trim().is_empty() {
                missing.push(path.to_string());
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    walk(&format!("{path}.{name}"), property, missing);
                }
            }
            if schema["items"]["properties"].is_object() {
                walk(&format!("{path}[]"), &schema["items"], missing);
            }
        }
        let schema = crd_schema()?;
        let mut missing = Vec::new();
        walk("spec", &schema["properties"]["spec"], &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
        // Field docs, not the type's: `mode` is an enum whose own doc kube would otherwise show.
        let metadata = &schema["properties"]["spec"]["properties"]["metadata"]["properties"];
        let group_mode =
            metadata["ipaGroup"]["items"]["properties"]["mode"]["description"].as_str();
        assert!(
            group_mode.is_some_and(|d| d.contains("IPA-wide")),
            "{group_mode:?}"
        );
        Ok(())
    }

    #[test]
    fn the_seeds_status_string_is_kept_and_a_short_name_exists() -> TestResult {
        let schema = crd_schema()?;
        assert_eq!(
            schema["properties"]["status"]["properties"]["status"]["type"],
            json!("string")
        );
        assert_eq!(
            IPA::crd().spec.names.short_names,
            Some(vec!["ipa".to_string()])
        );
        // The Rust status type ignores it: the seed's controller owns it.
        let status: crate::crd::IpaStatus = serde_json::from_value(json!({"status": "Success"}))?;
        assert_eq!(status, crate::crd::IpaStatus::default());
        Ok(())
    }
}
