//! Server reflection in both protocol versions: v1 for current tools, v1alpha
//! for grpcurl 1.8.6 and other older clients. Both describe our services and
//! the health service.

use tonic_reflection::server::Builder;

use crate::proto::FILE_DESCRIPTOR_SET;

/// Errors building the reflection services (a corrupt embedded descriptor).
#[derive(Debug, thiserror::Error)]
#[error("cannot build gRPC reflection: {0}")]
pub struct ReflectionError(#[from] tonic_reflection::server::Error);

fn builder() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// `grpc.reflection.v1.ServerReflection`.
pub fn v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    ReflectionError,
> {
    Ok(builder().build_v1()?)
}

/// `grpc.reflection.v1alpha.ServerReflection`.
pub fn v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    ReflectionError,
> {
    Ok(builder().build_v1alpha()?)
}
