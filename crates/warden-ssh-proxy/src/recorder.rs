//! A session's recording written by its own task.
//!
//! Escaping, hashing and writing a recording cost about as much CPU as relaying the bytes
//! themselves. Done inline, they sit in the relay's path and halve a bulk transfer; done by a
//! task of their own, they run on another core while the relay moves the next chunk. The
//! queue between the two is bounded, so a recorder that falls behind slows the session down
//! instead of letting output through unrecorded, and at most [`QUEUE`] chunks are in flight.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::recording::{Asciicast, Kind};

/// Chunks queued for the recorder at most (a chunk is one SSH data message, ≤ 32 KiB).
const QUEUE: usize = 64;

enum Entry {
    Data(Kind, Bytes),
    Resize(u32, u32),
    Flush,
    Finish(oneshot::Sender<io::Result<(String, u64)>>),
}

/// The relay's end of a recording.
pub(crate) struct Recorder {
    tx: mpsc::Sender<Entry>,
    failed: Arc<Notify>,
}

impl Recorder {
    /// Starts the task that writes `recording`; `failed` is notified if a write fails (the
    /// session must then end).
    pub(crate) fn spawn(mut recording: Asciicast, failed: Arc<Notify>) -> Self {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let notify = failed.clone();
        tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                let written = match entry {
                    Entry::Data(kind, data) => recording.data(kind, &data),
                    Entry::Resize(cols, rows) => recording.resize(cols, rows),
                    Entry::Flush => recording.flush_if_due(),
                    Entry::Finish(done) => {
                        let _ = done.send(recording.finish());
                        return;
                    }
                };
                if let Err(e) = written {
                    tracing::error!(error = %e, "recording write failed; ending the session");
                    notify.notify_one();
                    return;
                }
            }
        });
        Self { tx, failed }
    }

    /// Queues terminal data; waits while the recorder is [`QUEUE`] chunks behind.
    pub(crate) async fn data(&self, kind: Kind, data: Bytes) {
        self.send(Entry::Data(kind, data)).await;
    }

    pub(crate) async fn resize(&self, cols: u32, rows: u32) {
        self.send(Entry::Resize(cols, rows)).await;
    }

    /// Asks for buffered data to reach the store if the last flush is a second old. Skipped
    /// when the queue is full: the recorder is busy and flushes when due after each chunk.
    pub(crate) fn flush(&self) {
        let _ = self.tx.try_send(Entry::Flush);
    }

    /// Writes everything queued before this call and returns the recording's SHA-256 (hex)
    /// and size. Data queued after it is not recorded.
    pub(crate) async fn finish(&self) -> io::Result<(String, u64)> {
        let (done, result) = oneshot::channel();
        let gone = || io::Error::other("the recording ended early after a failed write");
        self.tx
            .send(Entry::Finish(done))
            .await
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }

    async fn send(&self, entry: Entry) {
        if self.tx.send(entry).await.is_err() {
            // The recorder stopped after a failed write (and said so); say it again in case
            // nobody was waiting then.
            self.failed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Header;
    use crate::recording::tests::Shared;
    use std::io::Write;

    /// Accepts the header, then fails every write.
    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn header() -> Header {
        Header {
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: "t".into(),
            term: None,
            command: Some("cat".into()),
            forced_command: None,
        }
    }

    #[tokio::test]
    async fn everything_queued_before_finish_is_recorded_in_order() {
        let buf = Shared::default();
        let rec = Asciicast::start(Box::new(buf.clone()), &header()).unwrap();
        let recorder = Recorder::spawn(rec, Arc::new(Notify::new()));
        for i in 0..(QUEUE * 3) {
            recorder
                .data(Kind::Output, Bytes::from(format!("{i}\n")))
                .await;
        }
        recorder.resize(100, 30).await;
        let (digest, size) = recorder.finish().await.unwrap();
        let bytes = buf.0.lock().unwrap().clone();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(
            digest,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(bytes)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), QUEUE * 3 + 1);
        for (i, line) in lines.iter().take(QUEUE * 3).enumerate() {
            assert_eq!(line[2], format!("{i}\n"));
        }
        assert_eq!(lines[QUEUE * 3][2], "100x30");
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_and_finish_fails() {
        // The header takes the one write that succeeds; a chunk above the write threshold is
        // written at once, and fails.
        let rec = Asciicast::start(Box::new(Full(1)), &header()).unwrap();
        let failed = Arc::new(Notify::new());
        let recorder = Recorder::spawn(rec, failed.clone());
        recorder
            .data(Kind::Output, Bytes::from(vec![b'x'; 1 << 20]))
            .await;
        tokio::time::timeout(std::time::Duration::from_secs(5), failed.notified())
            .await
            .expect("the failure is reported");
        assert!(recorder.finish().await.is_err());
    }
}
