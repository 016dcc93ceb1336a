//! The Hodei Jobs wire protocol (`hodei.v1`): generated prost messages and tonic services.
//!
//! Domain code converts these types at the edge; they never leak into the domain.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

/// Generated code of package `hodei.v1`.
pub mod v1 {
    tonic::include_proto!("hodei.v1");
}

/// Encoded file descriptor set of `hodei.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hodei_descriptor");
