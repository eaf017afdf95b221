//! Bearer tokens: an admin token for calls that change state, and an optional client token for
//! assigning and fetching models.
//!
//! Checked in one place, [`AuthLayer`], in front of every service and keyed on the gRPC method's
//! path ([`RPCS`]), so no handler can forget it. A `dekm.*` method missing from the table needs
//! the admin token (a test checks that the table names every method of the descriptor set);
//! health checking and reflection are open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use subtle::ConstantTimeEq;
use tonic::Status;

use crate::telemetry::Telemetry;
/// Who may call what.
#[derive(Clone, Default)]
pub struct Auth {
    admin: Option<String>,
    client: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("Auth")
            .field("admin", &self.admin.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// The access level a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Train, cancel, publish, activate, roll back, read jobs and fleet stats.
    Admin,
    /// Assign, list and fetch models, watch, report stats.
    Client,
}

/// Every method of package `dekm.v1`: its path, its name in the metrics, and who may call it.
pub const RPCS: &[(&str, &str, Access)] = &[
    ("/dekm.v1.Assigner/Assign", "Assign", Access::Client),
    (
        "/dekm.v1.Assigner/AssignStream",
        "AssignStream",
        Access::Client,
    ),
    ("/dekm.v1.Training/Train", "Train", Access::Admin),
    ("/dekm.v1.Training/GetJob", "GetJob", Access::Admin),
    ("/dekm.v1.Training/ListJobs", "ListJobs", Access::Admin),
    ("/dekm.v1.Training/CancelJob", "CancelJob", Access::Admin),
    ("/dekm.v1.Registry/ListModels", "ListModels", Access::Client),
    ("/dekm.v1.Registry/GetModel", "GetModel", Access::Client),
    (
        "/dekm.v1.Registry/PublishModel",
        "PublishModel",
        Access::Admin,
    ),
    (
        "/dekm.v1.Registry/ActivateModel",
        "ActivateModel",
        Access::Admin,
    ),
    (
        "/dekm.v1.Registry/RollbackModel",
        "RollbackModel",
        Access::Admin,
    ),
    ("/dekm.v1.Fleet/FetchModel", "FetchModel", Access::Client),
    ("/dekm.v1.Fleet/WatchModel", "WatchModel", Access::Client),
    ("/dekm.v1.Fleet/ReportStats", "ReportStats", Access::Client),
    (
        "/dekm.v1.Fleet/GetFleetStats",
        "GetFleetStats",
        Access::Admin,
    ),
];

/// What a request path needs: `None` for the open services (health, reflection); a `dekm.*`
/// method this build does not list needs the admin token.
fn required(path: &str) -> Option<(&'static str, Access)> {
    match RPCS.iter().find(|(p, _, _)| *p == path) {
        Some((_, name, access)) => Some((name, *access)),
        None if path.starts_with("/dekm.") => Some(("unlisted", Access::Admin)),
        None => None,
    }
}

impl Auth {
    /// `admin: None` leaves admin calls open (the server only allows that when told to
    /// explicitly); `client: None` leaves client calls open.
    pub fn new(admin: Option<String>, client: Option<String>) -> Self {
        Self { admin, client }
    }

    /// Checks the `authorization: Bearer <token>` header for `access`. The admin token also
    /// grants client access.
    pub fn check(&self, headers: &http::HeaderMap, access: Access) -> Result<(), Status> {
        let required = match access {
            Access::Admin => self.admin.as_deref(),
            Access::Client => self.client.as_deref(),
        };
        let Some(required) = required else {
            return Ok(());
        };
        let given = headers
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let eq = |t: &str| bool::from(given.as_bytes().ct_eq(t.as_bytes()));
        let admin_ok = self.admin.as_deref().is_some_and(eq);
        if eq(required) || (access == Access::Client && admin_ok) {
            Ok(())
        } else {
            Err(Status::unauthenticated(match access {
                Access::Admin => "this call needs the admin token",
                Access::Client => "invalid token",
            }))
        }
    }
}

/// The tower layer that checks every call's token before any service sees it, and counts a
/// refused call in the metrics as the handler would have.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Auth,
    telemetry: Arc<Telemetry>,
}

impl AuthLayer {
    /// Checks with `auth`, counts refusals in `telemetry`.
    pub fn new(auth: Auth, telemetry: Arc<Telemetry>) -> Self {
        Self { auth, telemetry }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some((method, access)) = required(req.uri().path()) {
            let started = Instant::now();
            if let Err(status) = self.layer.auth.check(req.headers(), access) {
                let refused: Result<(), Status> = Err(status.clone());
                self.layer.telemetry.record(method, started, &refused);
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = token {
            h.insert("authorization", t.parse().unwrap());
        }
        h
    }

    #[test]
    fn admin_and_client_tokens_gate_their_calls() {
        let a = Auth::new(Some("adm".into()), Some("cli".into()));
        let ok = |t, access| a.check(&req(t), access).is_ok();
        assert!(ok(Some("Bearer adm"), Access::Admin));
        assert!(ok(Some("Bearer adm"), Access::Client));
        assert!(ok(Some("Bearer cli"), Access::Client));
        assert!(!ok(Some("Bearer cli"), Access::Admin));
        assert!(!ok(Some("Bearer ad"), Access::Admin));
        assert!(!ok(Some("adm"), Access::Admin));
        assert!(!ok(None, Access::Client));
        let e = a.check(&req(None), Access::Admin).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);

        let open_clients = Auth::new(Some("adm".into()), None);
        assert!(open_clients.check(&req(None), Access::Client).is_ok());
        assert!(open_clients.check(&req(None), Access::Admin).is_err());
        assert!(Auth::default().check(&req(None), Access::Admin).is_ok());
    }

    #[test]
    fn every_method_of_the_contract_has_its_access() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(dekm_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert_eq!(paths.len(), RPCS.len(), "{paths:?}");
        for path in &paths {
            let (name, _) = required(path).unwrap();
            assert!(
                path.ends_with(&format!("/{name}")),
                "{path} is named {name}"
            );
        }
        assert_eq!(
            required("/dekm.v2.Assigner/Assign"),
            Some(("unlisted", Access::Admin))
        );
        assert_eq!(required("/grpc.health.v1.Health/Check"), None);
    }
}
