//! `EnrollService`: a one-time join token + a CSR → a minion certificate (see [`super::pki`]).

use super::pki::{Ca, PkiError};
use overlord_proto::v1;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct EnrollApi {
    pub ca: Arc<Ca>,
}

#[tonic::async_trait]
impl v1::enroll_service_server::EnrollService for EnrollApi {
    async fn enroll(
        &self,
        req: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let r = req.into_inner();
        let ca = self.ca.clone();
        let out = tokio::task::spawn_blocking(move || ca.enroll(&r.join_token, &r.csr_pem))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match out {
            Ok((cert_pem, minion_id, provider)) => {
                tracing::info!(minion = %minion_id, %provider, "minion enrolled");
                Ok(Response::new(v1::EnrollResponse {
                    cert_pem,
                    ca_pem: self.ca.ca_pem.clone(),
                    minion_id,
                    provider,
                }))
            }
            Err(e @ PkiError::Token(_)) => {
                tracing::warn!(error = %e, "enrollment refused");
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e @ PkiError::Invalid(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}
