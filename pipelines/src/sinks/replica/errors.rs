//! Telling a replica that is away (wait, spill, try again) from one that refuses (stop, or
//! set the batch aside).

/// Whether an error means the replica could not be reached (rather than refused something).
pub(super) fn is_unreachable(error: &anyhow::Error) -> bool {
    // A server that refused the TLS asked for did answer: waiting will not change its
    // certificate, so the job stops with the reason instead of spilling.
    if error
        .chain()
        .any(|cause| cause.is::<crate::connect::pg_tls::TlsRefused>())
    {
        return false;
    }
    error.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg.code().is_none() || pg.is_closed();
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// Whether the replica refused a batch for the data it holds, so that writing it again can
/// never succeed: a PostgreSQL data exception (SQLSTATE class 22: a NUL byte in text, a value
/// out of range), or on SQLite a value too big or of the wrong type. Constraint violations are
/// not: a migration can fix those, and the batch then goes through.
pub(super) fn refused_for_good(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg.code().is_some_and(|c| c.code().starts_with("22"));
        }
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            cause.downcast_ref::<rusqlite::Error>()
        {
            return matches!(
                failure.code,
                rusqlite::ErrorCode::TooBig | rusqlite::ErrorCode::TypeMismatch
            );
        }
        false
    })
}
