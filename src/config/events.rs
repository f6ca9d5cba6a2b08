//! The `events:` section: the live event stream of the status page
//! (`GET /api/events`): how many streams may be open at once, and how often
//! an idle stream sends a heartbeat comment.

use std::time::Duration;

use serde::Deserialize;

use super::check::Checker;
use super::units::{Dur, format_duration};

/// The most `max_streams` accepted: every stream holds a connection, and
/// the server keeps at most 4,096 (see `http/serve.rs`).
pub const MAX_STREAMS: usize = 4096;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    max_streams: Option<usize>,
    heartbeat: Option<Dur>,
}

/// `events:` as validated.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsConfig {
    /// Streams open at once; one more is answered 503.
    pub max_streams: usize,
    /// A comment line sent on every stream this often, so that proxies and
    /// load balancers do not close it for idleness.
    pub heartbeat: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_streams: 256,
            heartbeat: Duration::from_secs(15),
        }
    }
}

impl Checker<'_> {
    pub(super) fn events(&self, raw: &RawEvents) -> EventsConfig {
        let d = EventsConfig::default();
        let c = EventsConfig {
            max_streams: raw.max_streams.unwrap_or(d.max_streams),
            heartbeat: raw.heartbeat.map_or(d.heartbeat, |h| h.0),
        };
        if c.max_streams == 0 || c.max_streams > MAX_STREAMS {
            self.problem(
                "events.max_streams",
                format!("max_streams {} is out of range", c.max_streams),
                format!("use 1 to {MAX_STREAMS}: each open status page holds one stream"),
            );
        }
        let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(300));
        if c.heartbeat < lo || c.heartbeat > hi {
            self.problem(
                "events.heartbeat",
                format!("heartbeat {} is out of range", format_duration(c.heartbeat)),
                "use 1s to 5m: proxies close streams idle for about a minute",
            );
        }
        c
    }
}
