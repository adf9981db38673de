//! Liquibase conventions (scaffold: replaced by the engine's implementation in this change).

use dbprov_contract::migration::{MigrationIntent, MigrationObserved};
use dbprov_proto::agent::v1::ErrorCode;

use super::{Progress, SourceFile, Target};
use crate::error::OpError;

/// Runs `intent` in Liquibase's conventions.
pub async fn run(
    _target: Target<'_>,
    _intent: &MigrationIntent,
    _files: Vec<SourceFile>,
    _progress: Progress<'_>,
) -> Result<MigrationObserved, OpError> {
    Err(OpError::new(
        ErrorCode::Unsupported,
        "Liquibase migrations are not built yet",
        false,
    ))
}
