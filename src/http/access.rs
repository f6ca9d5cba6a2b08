//! Who may read which endpoint group: the one place the status page (`/`)
//! and its event stream (`/api/events`) ask before answering. Both are
//! public today, as `/api/health` is; the `access:` section of the security
//! additions (`page` and `events` groups: public, authenticated, summary)
//! is decided here, so that the handlers need no change.

use axum::http::HeaderMap;

use super::error::ApiError;
use super::shared::Shared;

/// The endpoint groups of the `access:` configuration that ask here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Group {
    Page,
    Events,
}

/// Whether the request may be answered; `Err` is the refusal to send.
pub(super) fn check(_s: &Shared, _group: Group, _headers: &HeaderMap) -> Result<(), ApiError> {
    Ok(())
}
