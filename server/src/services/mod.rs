//! The four gRPC services of package `dekm.v1`, one struct each holding only the state its
//! handlers use; every handler checks its caller's token, then answers, then records the call.

mod assigner;
mod fleet;
mod models;
mod training;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::Status;

pub(crate) use assigner::AssignerService;
pub(crate) use fleet::FleetService;
pub(crate) use models::RegistryService;
pub(crate) use training::TrainingService;

/// The server-streaming responses' type.
type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
