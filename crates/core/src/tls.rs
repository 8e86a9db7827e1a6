//! The certificate authorities a `ca_file` key names, for every TLS client vitals builds.

use std::path::Path;

use crate::files::{read_bounded, MAX_FILE_BYTES};

const CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";

/// The PEM text of a CA file, checked to hold at least one certificate; the error says what to
/// give instead.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_bounded(path)
        .map_err(|e| {
            format!(
                "cannot read {}: {e}; give the path of a PEM file of the certificate authorities to trust",
                path.display()
            )
        })?
        .ok_or_else(|| {
            format!(
                "{} is larger than {} MiB, more than any bundle of certificate authorities; give the CA's PEM file",
                path.display(),
                MAX_FILE_BYTES >> 20
            )
        })?;
    if !pem
        .windows(CERT_BEGIN.len())
        .any(|w| w == CERT_BEGIN.as_bytes())
    {
        return Err(format!(
            "{} holds no PEM certificate (no \"{CERT_BEGIN}\" line); give the CA's certificate in PEM",
            path.display()
        ));
    }
    Ok(pem)
}
