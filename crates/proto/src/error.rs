//! The one place where domain errors become `tonic::Status`. Match on codes, never on text.

use overlord_core::job::SpecError;

/// Error codes shared by the coordinator's gRPC adapters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("job {0} not found")]
    JobNotFound(u64),
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("too many concurrent {0}; retry later")]
    Exhausted(&'static str),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// A submission reused a request id of an earlier submission with a different spec.
    #[error("request id {0:?} was used before for a different job spec; pick a new request id")]
    RequestIdReused(String),
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::Spec(SpecError::Scope(_)) => tonic::Status::permission_denied(msg),
            ApiError::Spec(_) | ApiError::InvalidArgument(_) | ApiError::Protocol(_) => {
                tonic::Status::invalid_argument(msg)
            }
            ApiError::JobNotFound(_) | ApiError::ImageNotFound(_) => tonic::Status::not_found(msg),
            ApiError::Unavailable(_) => tonic::Status::unavailable(msg),
            ApiError::Storage(_) => tonic::Status::internal(msg),
            ApiError::Exhausted(_) => tonic::Status::resource_exhausted(msg),
            ApiError::RequestIdReused(_) => tonic::Status::already_exists(msg),
        }
    }
}
