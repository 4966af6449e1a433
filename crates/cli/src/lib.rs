//! The `overlord` command line: thin wrappers over the coordinator and minion libraries, a gRPC
//! client for jobs, an embedded one-process cluster, and the benchmarks.

pub mod beacons;
pub mod bench;
pub mod bench_firehose;
pub mod bench_scan;
pub mod client;
pub mod embedded;
pub mod files;
pub mod images;
pub mod otel;
pub mod query;
pub mod secure;
