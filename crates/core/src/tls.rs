//! The certificate authorities a `ca_file` key names, for every TLS client vitals builds.

use std::io::Read;
use std::path::Path;

const CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";

/// The most of a CA file read: a whole public bundle is a few hundred KiB; a device or a log
/// named by mistake is refused, not read into memory.
const MAX_CA_BYTES: u64 = 4 << 20;

/// The PEM text of a CA file, checked to hold at least one certificate; the error says what to
/// give instead.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| {
            format!(
                "cannot read {}: {e}; give the path of a PEM file of the certificate authorities to trust",
                path.display()
            )
        })?;
    if pem.len() as u64 > MAX_CA_BYTES {
        return Err(format!(
            "{} is larger than {} MiB, more than any bundle of certificate authorities; give the CA's PEM file",
            path.display(),
            MAX_CA_BYTES >> 20
        ));
    }
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
