//! Reading the files a configuration names, within a bound.

use std::io::Read;
use std::path::Path;

/// The most read of a file vitals is given (`--config`, a `ca_file`): a configuration is a few
/// KiB and a public CA bundle a few hundred; a device or a log named by mistake is refused, not
/// read into memory for ever.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// `path`'s bytes, or `None` when it holds more than [`MAX_FILE_BYTES`] (read no further).
pub fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_FILE_BYTES).then_some(bytes))
}
