//! Runnable examples live as [[bin]] targets of this crate.
//!
//! - `firehose-consumer` ([`firehose`]): reads findings from the NATS JetStream firehose.
//! - `grpc-client` ([`grpc_client`]): submits a job, watches it (and resumes the watch from a
//!   cursor), pages its results and searches the index, over gRPC (stubs from `proto/`).

pub mod firehose;
pub mod grpc_client;
