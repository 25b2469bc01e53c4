//! Wall-clock time as the status stores it (RFC 3339) and as the core reasons about it (unix seconds).

pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub fn rfc3339(unix: i64) -> Option<String> {
    jiff::Timestamp::from_second(unix)
        .ok()
        .map(|t| t.to_string())
}

pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}
