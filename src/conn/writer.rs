//! The writer task: batches of frames out through vectored writes.

use std::io::IoSlice;

use iscsi_proto::frame::OutFrame;
use tokio::{io::AsyncWriteExt, net::tcp::OwnedWriteHalf, sync::mpsc};

/// Writes batches of frames with vectored writes until the channel closes. Emptied batch
/// vectors go back to the connection through `spare`, so that a batch costs no allocation.
pub(super) async fn writer_task(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<OutFrame>>,
    spare: mpsc::UnboundedSender<Vec<OutFrame>>,
) {
    let mut frames: Vec<OutFrame> = Vec::new();
    while let Some(mut batch) = rx.recv().await {
        frames.append(&mut batch);
        let _ = spare.send(batch);
        while let Ok(mut more) = rx.try_recv() {
            frames.append(&mut more);
            let _ = spare.send(more);
            if frames.len() > 256 {
                break;
            }
        }
        if let Err(e) = write_frames(&mut wr, &frames).await {
            tracing::debug!(error = %e, "write failed");
            return;
        }
        frames.clear();
    }
    let _ = wr.shutdown().await;
}

async fn write_frames(wr: &mut OwnedWriteHalf, frames: &[OutFrame]) -> std::io::Result<()> {
    // On the stack for the usual handful of frames.
    let mut parts: smallvec::SmallVec<[&[u8]; 24]> = smallvec::SmallVec::new();
    for f in frames {
        for p in [&f.header[..], &f.data[..], &f.trailer[..]] {
            if !p.is_empty() {
                parts.push(p);
            }
        }
    }
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        let slices: smallvec::SmallVec<[IoSlice<'_>; 24]> = parts[idx..]
            .iter()
            .take(512)
            .enumerate()
            .map(|(i, p)| IoSlice::new(if i == 0 { &p[off..] } else { p }))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = parts[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}
