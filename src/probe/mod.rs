//! The probe framework: what a check returns, how a probe is built from its
//! configuration, and the list of kinds. One file per kind beside this one;
//! adding a kind touches that file and the `kinds!` list below.

pub mod core;
pub mod http;
pub mod log;
pub mod mongodb;
pub mod process;
pub mod queue;
pub mod redis;
pub mod storage;

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::registry::Registry;

use crate::config::check::Checker;
use crate::config::yaml::Node;
use core::label_value;
pub use core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, Details, FamiliesOf, Outcome, Probe,
    Reason, Status, Trigger, Triggers,
};

/// Kind-specific metric families, registered once for the whole process and
/// shared by all probes of a kind, across reloads.
pub struct KindMetrics {
    pub http: Arc<http::Metrics>,
    pub process: Arc<process::Metrics>,
    pub log: Arc<log::Metrics>,
    pub storage: Arc<storage::Metrics>,
    pub redis: Arc<redis::Metrics>,
    pub mongodb: Arc<mongodb::Metrics>,
    /// Queue families shared by the kinds that watch job queues.
    pub queue: Arc<queue::Metrics>,
}

impl KindMetrics {
    /// The kinds' families, into `registry`, and those with a series per
    /// component that may number in the thousands (http) into `lines`.
    pub fn register(registry: &mut Registry, lines: &mut crate::metrics::lines::Registry) -> Self {
        KindMetrics {
            http: Arc::new(http::Metrics::register(lines)),
            process: Arc::new(process::Metrics::register(registry)),
            log: Arc::new(log::Metrics::register(registry)),
            storage: Arc::new(storage::Metrics::register(registry)),
            redis: Arc::new(redis::Metrics::register(registry)),
            mongodb: Arc::new(mongodb::Metrics::register(registry)),
            queue: Arc::new(queue::Metrics::register(registry)),
        }
    }
}

/// Each kind finds its own families in the registry's.
macro_rules! families_of {
    ($($field:ident: $ty:ty),*) => {$(
        impl FamiliesOf<$ty> for KindMetrics {
            fn families(&self) -> &Arc<$ty> {
                &self.$field
            }
        }
    )*};
}

families_of!(
    http: http::Metrics,
    process: process::Metrics,
    log: log::Metrics,
    storage: storage::Metrics,
    redis: redis::Metrics,
    mongodb: mongodb::Metrics,
    queue: queue::Metrics
);

macro_rules! kinds {
    ($($variant:ident => $module:ident, $name:literal;)*) => {
        /// The kind of a probe.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind { $($variant,)* }

        /// The configuration of one probe's own keys.
        #[derive(Clone, Debug, PartialEq)]
        pub enum ProbeSpec { $($variant($module::Spec),)* }

        pub const KIND_NAMES: &[&str] = &[$($name,)*];

        impl Kind {
            pub fn from_name(s: &str) -> Option<Kind> {
                match s { $($name => Some(Kind::$variant),)* _ => None }
            }
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $name,)* }
            }
            /// The default buckets of the kind's `depwatch_check_duration_seconds`.
            pub fn buckets(self) -> &'static [f64] {
                match self { $(Kind::$variant => $module::BUCKETS,)* }
            }
        }

        impl ProbeSpec {
            pub fn kind(&self) -> Kind {
                match self { $(ProbeSpec::$variant(_) => Kind::$variant,)* }
            }
        }

        /// Parses the kind's own keys of a probe (stage one and two).
        pub fn parse_spec(kind: Kind, node: &Node, path: &str, checker: &Checker, also: &[&'static str]) -> Option<ProbeSpec> {
            match kind { $(Kind::$variant => $module::Spec::parse(node, path, checker, also).map(ProbeSpec::$variant),)* }
        }

        /// Builds the probe of a validated configuration.
        pub fn build(spec: &ProbeSpec, ctx: &BuildCtx<KindMetrics>) -> Result<Arc<dyn Probe>, BuildError> {
            match spec { $(ProbeSpec::$variant(s) => Ok(Arc::new($module::build(s, ctx)?)),)* }
        }
    };
}

kinds! {
    Http => http, "http";
    Process => process, "process";
    Log => log, "log";
    Storage => storage, "storage";
    Redis => redis, "redis";
    Mongodb => mongodb, "mongodb";
}

impl ProbeSpec {
    /// The components (or `tag:T`) whose cached results this probe's events
    /// drop (log rules' `invalidates`), with their key paths below the probe.
    pub fn invalidates(&self) -> Vec<(String, String)> {
        match self {
            ProbeSpec::Log(s) => s.invalidates(),
            _ => Vec::new(),
        }
    }
}

label_value!(Kind);
