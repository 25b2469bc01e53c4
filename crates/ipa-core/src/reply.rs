//! Strict parser for LLM replies: raw or fenced JSON in, a `Recommendation` within policy out, or an error that
//! says what was wrong (the agent sends that back to the model on its one retry).
