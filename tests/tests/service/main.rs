//! The gRPC service end to end on 127.0.0.1 (ephemeral ports), split as the server is: one
//! file per service for its bad requests' status codes, tokens across services, the whole
//! life of a model (`story`), documents (`text`), what stock tools see (`discovery`), TLS
//! (`tls`) and several replicas on one database behind a load balancer (`replicas`).

mod assigner;
mod auth;
#[path = "../common/mod.rs"]
mod common;
mod discovery;
mod fleet;
mod harness;
mod registry;
mod replicas;
mod story;
mod text;
mod tls;
mod training;
