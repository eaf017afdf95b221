//! Bearer tokens: an admin token for calls that change state, and an optional client token for
//! assigning and fetching models.

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

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

impl Auth {
    /// `admin: None` leaves admin calls open (the server only allows that when told to
    /// explicitly); `client: None` leaves client calls open.
    pub fn new(admin: Option<String>, client: Option<String>) -> Self {
        Self { admin, client }
    }

    /// Checks the request's `authorization: Bearer <token>` for `access`. The admin token
    /// also grants client access.
    pub fn check<T>(&self, req: &Request<T>, access: Access) -> Result<(), Status> {
        let required = match access {
            Access::Admin => self.admin.as_deref(),
            Access::Client => self.client.as_deref(),
        };
        let Some(required) = required else {
            return Ok(());
        };
        let given = req
            .metadata()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", t.parse().unwrap());
        }
        r
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
}
