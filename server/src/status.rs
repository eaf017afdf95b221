//! Our errors as gRPC statuses, converted only here, at the boundary: each store error to the
//! code a client can act on, and tonic's codes for oversized messages to gRPC's convention.

use tonic::Status;

use crate::fleet::FleetError;
use crate::jobs::JobsError;
use crate::registry::RegistryError;

/// A registry error: unknown model NOT_FOUND, nothing active FAILED_PRECONDITION, a bad
/// bundle INVALID_ARGUMENT, storage INTERNAL (logged).
pub(crate) fn registry_status(e: RegistryError) -> Status {
    match e {
        RegistryError::UnknownModel(_) => Status::not_found(e.to_string()),
        RegistryError::NoActive | RegistryError::NothingToRollBack => {
            Status::failed_precondition(e.to_string())
        }
        RegistryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        RegistryError::Io { .. }
        | RegistryError::State(_)
        | RegistryError::Database(_)
        | RegistryError::Corrupt { .. } => {
            tracing::error!(error = %e, "model store");
            Status::internal(e.to_string())
        }
    }
}

/// A job error: unknown job NOT_FOUND, finished FAILED_PRECONDITION, storage INTERNAL.
pub(crate) fn jobs_status(e: JobsError) -> Status {
    match e {
        JobsError::UnknownJob(_) => Status::not_found(e.to_string()),
        JobsError::Finished { .. } => Status::failed_precondition(e.to_string()),
        JobsError::Storage(_) | JobsError::Io { .. } => {
            tracing::error!(error = %e, "job store");
            Status::internal(e.to_string())
        }
    }
}

/// A fleet error: a bad report INVALID_ARGUMENT, storage INTERNAL.
pub(crate) fn fleet_status(e: FleetError) -> Status {
    match e {
        FleetError::Invalid(_) => Status::invalid_argument(e.to_string()),
        FleetError::Storage(_) => {
            tracing::error!(error = %e, "fleet store");
            Status::internal(e.to_string())
        }
    }
}

/// tonic reports an oversized message as OUT_OF_RANGE; gRPC's convention is RESOURCE_EXHAUSTED.
pub(crate) fn oversized_to_exhausted(s: Status) -> Status {
    if s.code() == tonic::Code::OutOfRange && s.message().contains("message length too large") {
        Status::resource_exhausted(s.message().to_string())
    } else {
        s
    }
}

/// The same for unary calls, whose request tonic decodes before any handler runs: rewrites the
/// status in the trailers-only response headers.
pub(crate) fn remap_oversized(
    mut res: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let h = res.headers_mut();
    let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if too_large {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

/// A blocking worker that panicked or was cancelled.
pub(crate) fn blocking_failed(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker thread failed: {e}"))
}
