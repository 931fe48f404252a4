//! Code generated from `proto/externalscaler.proto` (KEDA's external scaler contract).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}

/// Encoded `FileDescriptorSet` of the proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
