//! Runnable examples live as [[bin]] targets of this crate.
//!
//! - `firehose-consumer` ([`firehose`]): reads findings from the NATS JetStream firehose.

pub mod firehose;
