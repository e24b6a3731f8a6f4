//! The admission checks behind `POST /validate`: an AdmissionReview in, its response out.

use crate::admission::{Settings, admit};
use crate::server::{Answer, Handler};
use crate::world::World;
use std::sync::Arc;

/// [`admit`] over a [`World`] as the server's [`Handler`].
pub struct Admitter<W: World + 'static> {
    /// The settings.
    pub settings: Settings,
    /// What the checks know of the cluster.
    pub world: Arc<W>,
    /// Whether the world is complete (the watches listed everything once).
    pub ready: fn(&W) -> bool,
}

impl<W: World + 'static> Handler for Admitter<W> {
    fn handle(&self, body: &[u8]) -> Result<Answer, String> {
        let d = crate::review::decode(body).map_err(|e| e.to_string())?;
        let decision = admit(&self.settings, self.world.as_ref(), &d.request);
        tracing::debug!(
            uid = d.uid,
            kind = d.request.kind.label(),
            operation = d.request.operation.label(),
            object = format!("{}/{}", d.request.namespace, d.request.name),
            allowed = decision.allowed,
            "admission"
        );
        Ok(Answer {
            body: crate::review::encode(&d.uid, &decision),
            kind: d.request.kind.label(),
            operation: d.request.operation.label(),
            allowed: decision.allowed,
        })
    }

    fn ready(&self) -> bool {
        (self.ready)(&self.world)
    }
}
