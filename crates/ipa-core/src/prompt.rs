//! Builds a compact LLM prompt from a `MetricsSnapshot` and a `Policy`, and the JSON schema the reply must follow.
