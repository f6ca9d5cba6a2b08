//! The templates of `/probe?target=URL&module=NAME` (`modules:`): a module
//! is an http probe without a url, the URLs it may be aimed at
//! (`allowed_targets`, [`TargetPattern`]s), and its timeout. The allow-list
//! holds for every redirect hop too: the client checks each one.

use std::sync::Arc;
use std::time::Duration;

use super::config::{Spec, SpecData};
use crate::net::client::Request;
use crate::net::target::{Target, TargetPattern};

/// A named http probe template for `/probe?target=URL&module=NAME`.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub timeout: Duration,
    pub allowed_targets: Vec<TargetPattern>,
    pub spec: Spec,
}

impl Module {
    pub fn allows(&self, t: &Target) -> bool {
        self.allowed_targets.iter().any(|p| p.matches(t))
    }

    /// The module aimed at `target`; every redirect it follows must match
    /// `allowed_targets` too (else a partner could point it anywhere).
    pub fn spec_for(&self, target: Target) -> Spec {
        let template = &*self.spec.0;
        Spec(Arc::new(SpecData {
            request: Request {
                url: Some(target),
                redirect_allowed: Some(self.allowed_targets.clone()),
                ..template.request.clone()
            },
            ..template.clone()
        }))
    }
}
