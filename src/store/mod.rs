//! The state store: one SQLite file under `state_dir` (see [`core`]), with
//! a module per table that owns its rows — [`history`] (storage samples),
//! [`offsets`] (log read offsets). Tables of other parts (the alerting
//! outbox) follow the same pattern beside their owner. [`lock`] keeps a
//! second depwatch out of the directory.

pub mod core;
pub mod history;
pub mod lock;
pub mod metrics;
pub mod offsets;
pub mod schema;

pub use self::core::{FILE_NAME, MAX_RETENTION, Numbers, Recovery, Store, StoreError};
pub use history::StorageSample;
pub use offsets::{FileMark, Saved};
pub use schema::{MIGRATIONS, Migration};
