//! Length-prefixed frames on a byte stream, for terminal sessions and issuer links alike.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::FRAME_LEN_MAX;

/// Why a stream stopped yielding frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds {FRAME_LEN_MAX}")]
    TooLong { len: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame into `buf` (without its length prefix). `Ok(false)`: the peer closed the
/// stream cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, WireError> {
    let mut prefix = [0u8; 2];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > FRAME_LEN_MAX {
        return Err(WireError::TooLong { len });
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    Ok(true)
}
