//! overlord-proto: the generated gRPC code (from `proto/overlord/v1/*.proto`), conversions between
//! wire and domain types, and the one mapping from domain errors to `tonic::Status`.

pub mod codec;
pub mod convert;
pub mod error;

/// Generated code for package `overlord.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("overlord.v1");
}

/// Encoded file descriptor set for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/overlord_descriptor.bin"));

/// Max gRPC message size in both directions (blobs such as screenshots are ≤ 16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Builds the reflection service (v1) for the Overlord services.
pub fn reflection_service() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Same for the older v1alpha reflection API (grpcurl still asks for it first).
pub fn reflection_service_alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
}
