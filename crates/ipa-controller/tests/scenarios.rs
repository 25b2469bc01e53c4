//! The reconcile path, offline: each scenario runs the controller's own cycle against a fake API server, a fake
//! Prometheus and a fake agent (see `support/`), and checks what was written to the Deployment and to status.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use ipa_controller::crd::GroupStatus;
use serde_json::{Value, json};
use support::fake_http::{self, AgentScript, Answer};
use support::{FakeApi, NS, Scenario, Workload, ipa, workload};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const T0: i64 = 1_800_000_000;

async fn prometheus_for(load: Workload) -> std::io::Result<String> {
    let answer: Answer = Arc::new(move |q| Some(load.answer(q)));
    fake_http::prometheus(answer).await
}

fn group(extra: Value) -> Value {
    let mut g = json!({"deployment": "web", "namespace": NS, "minReplicas": 1, "maxReplicas": 20});
    if let (Some(g), Some(extra)) = (g.as_object_mut(), extra.as_object()) {
        g.extend(extra.clone());
    }
    g
}

async fn scenario(
    load: Workload,
    agent: Option<String>,
    group: Value,
) -> Result<Scenario, Box<dyn std::error::Error>> {
    let api = FakeApi::default();
    api.add_deployment(NS, "web", load.pods.len() as u32, "100m");
    let prometheus = prometheus_for(load).await?;
    let spec = json!({"prometheusUri": prometheus, "llmAgent": agent.unwrap_or_default(), "ipaGroup": [group]});
    Ok(Scenario::new(api, ipa(spec)?)?)
}

fn first_group(status: &ipa_controller::IpaStatus) -> Result<&GroupStatus, String> {
    status
        .groups
        .first()
        .ok_or_else(|| "status has no group".to_string())
}

fn condition<'a>(g: &'a GroupStatus, type_: &str) -> Option<&'a str> {
    g.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[tokio::test]
async fn a_load_step_scales_up_in_the_next_fast_cycle() -> TestResult {
    // 2 pods at 300 % of a 100m request (target 70 %): well past HPA's tolerance.
    let mut s = scenario(workload(2, 0.3), None, group(json!({}))).await?;
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    let replicas = s.api.replicas(NS, "web").unwrap_or(0);
    assert!(replicas > 2, "scaled to {replicas}; status: {g:?}");
    assert_eq!(g.desired_replicas, Some(replicas as u32));
    assert_eq!(condition(g, "Applied"), Some("Applied"));
    assert_eq!(s.api.seen(Method::PATCH, "/deployments/web/scale").len(), 1);
    // The change is explained in an Event on the Deployment.
    let events = s.api.seen(Method::POST, "/events");
    assert!(
        events.iter().any(|e| e.body["reason"] == "Scaled"),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_resize_after_a_scale_is_retried_on_fresh_state_and_both_are_kept() -> TestResult {
    // Pods far over their request and maxReplicas reached: the decision both scales and grows the pods. The
    // Deployment's controller bumps its resourceVersion after the scale, so the resize's first try is a 409.
    let load = workload(2, 0.9);
    let mut s = scenario(load, None, group(json!({"maxReplicas": 3}))).await?;
    s.api.bump_after_scale();
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(s.api.replicas(NS, "web"), Some(3), "status: {g:?}");
    let cpu = s.api.cpu_request(NS, "web");
    assert_ne!(
        cpu.as_deref(),
        Some("100m"),
        "the resize was lost; status: {g:?}"
    );
    assert_eq!(condition(g, "Applied"), Some("Applied"), "{g:?}");
    assert!(g.last_scale_time.is_some() && g.last_resize_time.is_some());
    let resizes = s.api.seen(Method::PATCH, "/deployments/web");
    assert_eq!(resizes.len(), 2, "one 409, one retry: {resizes:?}");
    Ok(())
}

#[tokio::test]
async fn a_scale_that_succeeded_keeps_its_window_when_the_resize_after_it_conflicts() -> TestResult
{
    let load = workload(2, 0.9);
    let mut s = scenario(load, None, group(json!({"maxReplicas": 3}))).await?;
    // Someone else changes the template between our read and our resize: no retry may override them.
    s.api.bump_after_scale();
    s.api.their_change_after_scale("150m");
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(s.api.replicas(NS, "web"), Some(3));
    assert_eq!(
        s.api.cpu_request(NS, "web").as_deref(),
        Some("150m"),
        "their change stands"
    );
    assert_eq!(condition(g, "Applied"), Some("Conflict"), "{g:?}");
    assert!(
        g.guard_state.scale_events.iter().any(|e| e.at == T0),
        "the scale is remembered: {g:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_scale_down_window_holds_after_a_resize_conflict() -> TestResult {
    let mut s = scenario(workload(2, 0.9), None, group(json!({"maxReplicas": 3}))).await?;
    s.api.bump_after_scale();
    s.api.their_change_after_scale("150m");
    s.cycle(T0).await?;
    // The load falls away at once; 15 s later the window (90 s by default) still holds the replicas.
    let quiet = fake_http::prometheus(Arc::new(|q| Some(workload(3, 0.001).answer(q)))).await?;
    s.ipa.spec.metadata.prometheus_uri = quiet;
    s.cycle(T0 + 15).await?;
    assert_eq!(s.api.replicas(NS, "web"), Some(3));
    Ok(())
}

#[tokio::test]
async fn a_slow_agent_never_delays_the_fast_cycle() -> TestResult {
    let script = AgentScript {
        delay: Duration::from_secs(30),
        reply: json!({"replicas": 2, "source": "llm"}),
        asked: Arc::new(Mutex::new(0)),
    };
    let agent = fake_http::agent(script.clone()).await?;
    let mut s = scenario(workload(2, 0.3), Some(agent), group(json!({}))).await?;
    let started = Instant::now();
    let status = s.cycle(T0).await?;
    // The advisory cycle waits 2 s for answers at most; the built-in decides without it.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(s.api.replicas(NS, "web").unwrap_or(0) > 2);
    assert_eq!(
        condition(first_group(&status)?, "AgentAvailable"),
        Some("Asking")
    );
    assert_eq!(*script.asked.lock().map_err(|e| e.to_string())?, 1);
    // A fast cycle 15 s later asks nobody (the first ask is still running).
    s.cycle(T0 + 15).await?;
    assert_eq!(*script.asked.lock().map_err(|e| e.to_string())?, 1);
    Ok(())
}

#[tokio::test]
async fn a_missing_target_gets_its_own_status_and_the_others_are_served() -> TestResult {
    let api = FakeApi::default();
    api.add_deployment(NS, "web", 2, "100m");
    let prometheus = prometheus_for(workload(2, 0.3)).await?;
    let spec = json!({"prometheusUri": prometheus, "ipaGroup": [
        {"deployment": "gone", "namespace": NS}, {"deployment": "web", "namespace": NS}]});
    let mut s = Scenario::new(api, ipa(spec)?)?;
    let status = s.cycle(T0).await?;
    assert_eq!(status.targets, "1/2");
    assert_eq!(
        condition(&status.groups[0], "TargetFound"),
        Some("NotFound")
    );
    assert_eq!(condition(&status.groups[1], "TargetFound"), Some("Found"));
    assert!(s.api.replicas(NS, "web").unwrap_or(0) > 2);
    Ok(())
}

#[tokio::test]
async fn the_fast_loop_keeps_the_advisors_floor_for_its_interval() -> TestResult {
    // At a steady 70 % the fast rule alone holds 10 pods; the advisor pre-scales to 12 (within 20 % of the need).
    let script = AgentScript {
        delay: Duration::ZERO,
        reply: json!({"replicas": 12, "source": "llm", "rationale": "a peak is due"}),
        asked: Arc::new(Mutex::new(0)),
    };
    let agent = fake_http::agent(script).await?;
    let mut s = scenario(workload(10, 0.07), Some(agent), group(json!({}))).await?;
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(s.api.replicas(NS, "web"), Some(12), "{g:?}");
    assert!(g.guard_state.floor.is_some(), "{g:?}");
    // Fast cycles within the interval: same load, nobody asked, the floor holds.
    for t in [15, 30, 45] {
        s.cycle(T0 + t).await?;
        assert_eq!(s.api.replicas(NS, "web"), Some(12), "at +{t}s");
    }
    Ok(())
}

#[tokio::test]
async fn prometheus_down_changes_nothing_and_says_so() -> TestResult {
    let api = FakeApi::default();
    api.add_deployment(NS, "web", 3, "100m");
    let down = fake_http::prometheus(Arc::new(|_| None)).await?;
    let mut s = Scenario::new(
        api,
        ipa(json!({"prometheusUri": down, "ipaGroup": [group(json!({}))]}))?,
    )?;
    let status = s.cycle(T0).await?;
    assert_eq!(s.api.replicas(NS, "web"), Some(3));
    assert!(s.api.seen(Method::PATCH, "/scale").is_empty());
    let metrics = status
        .conditions
        .iter()
        .find(|c| c.type_ == "MetricsAvailable");
    assert_eq!(
        metrics.map(|c| c.reason.as_str()),
        Some("QueryFailed"),
        "{status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn recommend_mode_decides_but_writes_nothing_to_the_deployment() -> TestResult {
    let mut s = scenario(workload(2, 0.3), None, group(json!({"mode": "Recommend"}))).await?;
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(s.api.replicas(NS, "web"), Some(2));
    assert!(g.desired_replicas.unwrap_or(0) > 2);
    assert_eq!(condition(g, "Applied"), Some("RecommendMode"));
    assert!(
        g.guard_state.scale_events.is_empty(),
        "nothing written, nothing remembered"
    );
    Ok(())
}

#[tokio::test]
async fn an_authenticated_prometheus_is_read_with_the_token_from_a_secret() -> TestResult {
    let api = FakeApi::default();
    api.add_deployment(NS, "web", 2, "100m");
    api.add_secret(NS, "prom-token", "token", "s3cret\n");
    let answer: Answer = Arc::new(|q| Some(workload(2, 0.3).answer(q)));
    let prom = fake_http::prometheus_behind_token(answer, Some("s3cret".into())).await?;
    let auth = json!({"bearerTokenSecretRef": {"name": "prom-token", "key": "token"},
        "headers": {"X-Scope-OrgID": "team-a"}});
    let spec =
        json!({"prometheusUri": prom, "prometheusAuth": auth, "ipaGroup": [group(json!({}))]});
    let mut s = Scenario::new(api, ipa(spec)?)?;
    s.cycle(T0).await?;
    assert!(
        s.api.replicas(NS, "web").unwrap_or(0) > 2,
        "scaled on metrics read with the token"
    );
    // Without the Secret the queries are not sent, and status names what failed (not the Secret's content).
    let api = FakeApi::default();
    api.add_deployment(NS, "web", 2, "100m");
    let spec =
        json!({"prometheusUri": prom, "prometheusAuth": auth, "ipaGroup": [group(json!({}))]});
    let mut s = Scenario::new(api, ipa(spec)?)?;
    let status = s.cycle(T0).await?;
    assert_eq!(s.api.replicas(NS, "web"), Some(2));
    let metrics = status
        .conditions
        .iter()
        .find(|c| c.type_ == "MetricsAvailable");
    let message = metrics.map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("prometheusAuth"), "{message}");
    Ok(())
}

#[tokio::test]
async fn an_hpa_on_the_same_deployment_is_left_its_replicas_until_it_goes() -> TestResult {
    let mut s = scenario(workload(2, 0.3), None, group(json!({"vertical": false}))).await?;
    s.api.add_hpa(NS, "web-hpa", "web");
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(
        s.api.replicas(NS, "web"),
        Some(2),
        "the HPA's replicas are left alone"
    );
    let sole = g.conditions.iter().find(|c| c.type_ == "SoleAutoscaler");
    assert_eq!(sole.map(|c| c.status.as_str()), Some("False"), "{g:?}");
    assert!(
        sole.is_some_and(|c| c.message.contains("HorizontalPodAutoscaler apps/web-hpa")),
        "{sole:?}"
    );
    assert_eq!(
        condition(g, "Applied"),
        Some("ConflictingAutoscaler"),
        "{g:?}"
    );
    let warnings = s.api.seen(Method::POST, "/events");
    assert!(
        warnings
            .iter()
            .any(|e| e.body["reason"] == "ConflictingAutoscaler"),
        "{warnings:?}"
    );
    // The HPA is deleted: the next cycle acts.
    s.api.remove_hpa(NS, "web-hpa");
    s.cycle(T0 + 15).await?;
    assert!(s.api.replicas(NS, "web").unwrap_or(0) > 2);
    Ok(())
}

#[tokio::test]
async fn of_two_ipas_on_one_deployment_the_newer_refuses() -> TestResult {
    let mut s = scenario(workload(2, 0.3), None, group(json!({}))).await?;
    s.api
        .add_other_ipa(NS, "first", "web", "2026-01-01T00:00:00Z");
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(s.api.replicas(NS, "web"), Some(2));
    let sole = g.conditions.iter().find(|c| c.type_ == "SoleAutoscaler");
    assert!(
        sole.is_some_and(|c| c.status == "False" && c.message.contains("first")),
        "{sole:?}"
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));
    Ok(())
}

#[tokio::test]
async fn update_mode_off_scales_but_keeps_resizes_in_status() -> TestResult {
    let group = group(json!({"maxReplicas": 3, "updateMode": "Off"}));
    let mut s = scenario(workload(2, 0.9), None, group).await?;
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert_eq!(s.api.replicas(NS, "web"), Some(3));
    assert_eq!(
        s.api.cpu_request(NS, "web").as_deref(),
        Some("100m"),
        "{g:?}"
    );
    assert!(
        !g.desired_resources.is_empty(),
        "the resize is recommended: {g:?}"
    );
    assert_eq!(condition(g, "Applied"), Some("ResizeNotApplied"));
    assert!(g.last_resize_time.is_none() && g.guard_state.last_resize_at.is_none());
    Ok(())
}

/// A Prometheus with the workload's series plus `my_requests_total`, a demand counter outside ingress-nginx
/// (`rps` per second; `None`: the series does not exist).
async fn prometheus_with_demand(rps: Option<f64>) -> std::io::Result<String> {
    let load = workload(2, 0.3);
    let answer: Answer = Arc::new(move |q| {
        if !q.query.contains("my_requests_total") {
            return Some(load.answer(q));
        }
        let (start, end, step) = (
            q.start.unwrap_or(0.0),
            q.end.unwrap_or(0.0),
            q.step.unwrap_or(15.0),
        );
        let values: Vec<Value> = (0..)
            .map(|i| start + f64::from(i) * step)
            .take_while(|t| *t <= end)
            .map(|t| json!([t, rps.unwrap_or(0.0).to_string()]))
            .collect();
        let result = match rps {
            Some(_) => json!([{"metric": {"route": "checkout"}, "values": values}]),
            None => json!([]),
        };
        Some(json!({"resultType": "matrix", "result": result}))
    });
    fake_http::prometheus(answer).await
}

#[tokio::test]
async fn a_demand_query_feeds_the_request_rate_and_its_absence_is_missing_input() -> TestResult {
    let demand = json!({"demandQuery": "sum(rate(my_requests_total{route=\"checkout\"}[2m]))"});
    for (rps, missing) in [(Some(40.0), false), (None, true)] {
        let api = FakeApi::default();
        api.add_deployment(NS, "web", 2, "100m");
        let prom = prometheus_with_demand(rps).await?;
        let spec = json!({"prometheusUri": prom, "ipaGroup": [group(demand.clone())]});
        let mut s = Scenario::new(api, ipa(spec)?)?;
        let status = s.cycle(T0).await?;
        let g = first_group(&status)?;
        assert_eq!(
            g.missing_inputs.contains(&"request_rate".to_string()),
            missing,
            "{rps:?}: {g:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_demand_query_is_not_run_unless_the_controller_allows_it() -> TestResult {
    let api = FakeApi::default();
    api.add_deployment(NS, "web", 2, "100m");
    let prom = prometheus_with_demand(Some(40.0)).await?;
    let demand = json!({"demandQuery": "sum(rate(my_requests_total[2m]))"});
    let spec = json!({"prometheusUri": prom, "ipaGroup": [group(demand)]});
    let mut s = Scenario::new(api, ipa(spec)?)?.with_settings(|s| s.allow_demand_query = false);
    let status = s.cycle(T0).await?;
    let g = first_group(&status)?;
    assert!(
        g.missing_inputs.contains(&"request_rate".to_string()),
        "{g:?}"
    );
    let metrics = status
        .conditions
        .iter()
        .find(|c| c.type_ == "MetricsAvailable");
    let message = metrics.map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("--allow-demand-query"), "{message}");
    // Replicas still follow CPU.
    assert!(s.api.replicas(NS, "web").unwrap_or(0) > 2);
    Ok(())
}
