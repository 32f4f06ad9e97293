//! Length-prefixed frames on a byte stream, for terminal sessions and issuer links alike.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zeroize::Zeroize;

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
    read_body(reader, prefix, buf).await?;
    Ok(true)
}

/// Reads into `buf` the body of a frame whose length prefix was `prefix`; one longer than
/// `FRAME_LEN_MAX` is refused unread.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    prefix: [u8; 2],
    buf: &mut Vec<u8>,
) -> Result<(), WireError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > FRAME_LEN_MAX {
        return Err(WireError::TooLong { len });
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    Ok(())
}

/// Bytes reserved for one answer frame: more than any the host builds (the echoed fields, a
/// merchant name of 160 bytes in 63, three keys in 62, the MAC), so encoding never regrows it.
pub(crate) const REPLY_CAPACITY: usize = 1_024;

/// Appends `more` to `batch`; when `batch` must grow, the old allocation is wiped before it is
/// freed (it holds earlier frames, card numbers among them).
pub(crate) fn append_wiped(batch: &mut Vec<u8>, more: &[u8]) {
    let needed = batch.len().saturating_add(more.len());
    if needed > batch.capacity() {
        let mut grown = Vec::with_capacity(needed.next_power_of_two().max(256));
        grown.extend_from_slice(batch);
        batch.zeroize();
        *batch = grown;
    }
    batch.extend_from_slice(more);
}

/// A buffered reader that wipes each byte as it hands it out, and the rest when dropped. A
/// terminal's request carries its card number, track data and PIN block, and an issuer's reply
/// echoes the card number: `tokio::io::BufReader` would keep the last of them in a buffer that
/// lives as long as the connection, and free it unwiped.
pub(crate) struct WipingReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R> WipingReader<R> {
    pub(crate) fn with_capacity(capacity: usize, inner: R) -> WipingReader<R> {
        WipingReader {
            inner,
            buf: vec![0; capacity.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes the buffer holds that were read and not yet handed out, and whether every
    /// other byte of it is zero.
    #[cfg(test)]
    fn held(&self) -> (&[u8], bool) {
        let held = self.buf.get(self.start..self.end).unwrap_or_default();
        let rest_zero = self
            .buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == 0 || (self.start..self.end).contains(&i));
        (held, rest_zero)
    }
}

impl<R: AsyncRead + Unpin> WipingReader<R> {
    /// Waits until a byte can be read, reading it into the buffer without handing it out:
    /// `false` if the stream ended first.
    pub(crate) async fn wait_readable(&mut self) -> std::io::Result<bool> {
        std::future::poll_fn(|cx| {
            if self.start < self.end {
                return Poll::Ready(Ok(true));
            }
            let mut fill = ReadBuf::new(&mut self.buf);
            std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut fill))?;
            let filled = fill.filled().len();
            self.start = 0;
            self.end = filled;
            Poll::Ready(Ok(filled > 0))
        })
        .await
    }
}

impl<R> Drop for WipingReader<R> {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for WipingReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            // Nothing buffered: a read as large as the buffer goes straight to the caller.
            if out.remaining() >= this.buf.len() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut fill = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            this.start = 0;
            this.end = fill.filled().len();
        }
        let n = out.remaining().min(this.end - this.start);
        if let Some(chunk) = this.buf.get_mut(this.start..this.start + n) {
            out.put_slice(chunk);
            chunk.zeroize();
        }
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_batch_grows_into_a_new_allocation_with_its_bytes() {
        let mut batch = Vec::new();
        for chunk in [&[1u8, 2, 3][..], &[4; 300], &[5; 700]] {
            append_wiped(&mut batch, chunk);
        }
        assert_eq!(batch.len(), 1_003);
        assert_eq!(batch[..3], [1, 2, 3]);
        assert!(batch[3..303].iter().all(|&b| b == 4));
        assert!(batch[303..].iter().all(|&b| b == 5));
    }

    #[test]
    fn what_is_handed_out_is_wiped_and_the_rest_is_kept_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Two frames and the start of a third, all in one read of the buffer.
            let stream: &[u8] = &[0, 3, 7, 8, 9, 0, 2, 5, 6, 0, 4, 1];
            let mut reader = WipingReader::with_capacity(64, stream);
            let mut frame = Vec::new();
            assert!(read_frame(&mut reader, &mut frame).await.unwrap());
            assert_eq!(frame, [7, 8, 9]);
            let (held, rest_zero) = reader.held();
            assert_eq!(held, [0, 2, 5, 6, 0, 4, 1]);
            assert!(rest_zero, "the first frame is still in the buffer");
            assert!(read_frame(&mut reader, &mut frame).await.unwrap());
            assert_eq!(frame, [5, 6]);
            assert_eq!(reader.held(), (&[0, 4, 1][..], true));
            // The third frame is cut short: an error, not a frame.
            assert!(read_frame(&mut reader, &mut frame).await.is_err());
            assert_eq!(reader.held(), (&[][..], true));
        });
    }
}
