//! PDU framing over async streams.
//!
//! P-DATA-TF PDUs carry nearly all the bytes, so they are split into PDVs here
//! without copying; every other PDU type is decoded and encoded by dicom-ul.
//! Reading is cancel-safe (bytes stay in the reader's buffer until a whole
//! PDU is there), so a reader can sit in `tokio::select!` to notice C-CANCEL.

use bytes::{Buf, Bytes, BytesMut};
use dicom_ul::pdu::{Pdu, MINIMUM_PDU_SIZE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PDU_HEADER_LENGTH: usize = 6;
const P_DATA_TF: u8 = 0x04;
/// Association control PDUs are small; anything bigger is hostile.
const MAX_CONTROL_PDU: u32 = 1 << 20;

/// One presentation data value: a fragment of a command or data set.
#[derive(Debug, Clone)]
pub struct Pdv {
    pub context_id: u8,
    pub is_command: bool,
    pub is_last: bool,
    pub data: Bytes,
}

/// What arrived on the wire.
#[derive(Debug)]
pub enum Incoming {
    Data(Vec<Pdv>),
    Control(Pdu),
}

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("PDU of {length} bytes exceeds the limit of {limit}")]
    TooLarge { length: u32, limit: u32 },
    #[error("malformed PDU: {0}")]
    Malformed(String),
    #[error("PDU could not be encoded: {0}")]
    Encode(String),
    /// The peer took none of our bytes for this long (it stopped reading, or
    /// the network dropped it without a reset): the association cannot go on.
    #[error("peer accepted no data for {0:?}")]
    Stalled(std::time::Duration),
}

/// Reads PDUs from a stream with a bounded buffer.
pub struct PduReader<R> {
    stream: R,
    buffer: BytesMut,
    /// Largest P-DATA PDU body accepted (what we announced as our maximum).
    max_pdu_length: u32,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    pub fn new(stream: R, max_pdu_length: u32) -> Self {
        PduReader { stream, buffer: BytesMut::with_capacity(64 * 1024), max_pdu_length }
    }

    pub fn set_max_pdu_length(&mut self, max_pdu_length: u32) {
        self.max_pdu_length = max_pdu_length;
    }

    /// Read the next PDU. Cancel-safe.
    pub async fn read(&mut self) -> Result<Incoming, PduError> {
        loop {
            if let Some(incoming) = self.try_take()? {
                return Ok(incoming);
            }
            let read = self.stream.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return Err(PduError::Closed);
            }
        }
    }

    /// Take one complete PDU from the buffer, if there is one.
    fn try_take(&mut self) -> Result<Option<Incoming>, PduError> {
        if self.buffer.len() < PDU_HEADER_LENGTH {
            return Ok(None);
        }
        let pdu_type = self.buffer[0];
        let length = u32::from_be_bytes([self.buffer[2], self.buffer[3], self.buffer[4], self.buffer[5]]);
        // Our announced maximum covers the PDU body; allow a little slack for
        // peers that count the header too, but never unbounded input.
        let limit = if pdu_type == P_DATA_TF { self.max_pdu_length.saturating_add(64) } else { MAX_CONTROL_PDU };
        if length > limit {
            return Err(PduError::TooLarge { length, limit });
        }
        let total = PDU_HEADER_LENGTH + length as usize;
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        let mut pdu = self.buffer.split_to(total).freeze();
        if pdu_type == P_DATA_TF {
            pdu.advance(PDU_HEADER_LENGTH);
            return split_pdvs(pdu).map(|pdvs| Some(Incoming::Data(pdvs)));
        }
        let max = self.max_pdu_length.max(MINIMUM_PDU_SIZE);
        // dicom-ul decodes the control PDUs; guard against a panic on hostile
        // input so one bad peer cannot take a worker thread down with it.
        let decoded = std::panic::catch_unwind(|| dicom_ul::pdu::read_pdu(&pdu[..], MAX_CONTROL_PDU.max(max), false));
        match decoded {
            Ok(Ok(Some(pdu))) => Ok(Some(Incoming::Control(pdu))),
            Ok(Ok(None)) => Err(PduError::Malformed("incomplete PDU".into())),
            Ok(Err(error)) => Err(PduError::Malformed(error.to_string())),
            Err(_) => Err(PduError::Malformed("PDU decoder failed".into())),
        }
    }
}

/// Split a P-DATA-TF body into its PDV items.
fn split_pdvs(mut body: Bytes) -> Result<Vec<Pdv>, PduError> {
    let mut pdvs = Vec::with_capacity(2);
    while body.has_remaining() {
        if body.len() < 6 {
            return Err(PduError::Malformed("truncated PDV item header".into()));
        }
        let item_length = body.get_u32() as usize;
        if item_length < 2 || item_length > body.len() {
            return Err(PduError::Malformed(format!("PDV item length {item_length} is invalid")));
        }
        let context_id = body.get_u8();
        let control = body.get_u8();
        let data = body.split_to(item_length - 2);
        pdvs.push(Pdv { context_id, is_command: control & 0x01 != 0, is_last: control & 0x02 != 0, data });
    }
    if pdvs.is_empty() {
        return Err(PduError::Malformed("P-DATA-TF without PDV items".into()));
    }
    Ok(pdvs)
}

/// Writes PDUs, fragmenting messages to the peer's maximum PDU length.
pub struct PduWriter<W> {
    stream: W,
    /// Largest PDU body the peer accepts (0 from the peer means no limit; capped here).
    peer_max_pdu_length: u32,
    scratch: Vec<u8>,
    /// How long a write may wait for the peer to take any bytes.
    stall_limit: Option<std::time::Duration>,
    /// Set once a write stalled: the stream then ends in the middle of a
    /// PDU, and anything more (an A-ABORT, TLS's close_notify) would only
    /// wait behind the bytes the peer does not take.
    stalled: Option<std::time::Duration>,
}

/// Fragment size used when the peer sets no limit.
const UNLIMITED_FRAGMENT: u32 = 1 << 20;

impl<W: AsyncWrite + Unpin> PduWriter<W> {
    pub fn new(stream: W) -> Self {
        PduWriter {
            stream,
            peer_max_pdu_length: 16_384,
            scratch: Vec::with_capacity(64 * 1024),
            stall_limit: None,
            stalled: None,
        }
    }

    /// Fail writes during which the peer takes no bytes for `limit`. Without
    /// it, a peer that stops reading (its receive window stays closed) holds
    /// the association, and whatever its operation holds, for ever.
    pub fn set_stall_limit(&mut self, limit: std::time::Duration) {
        self.stall_limit = Some(limit);
    }

    pub fn set_peer_max_pdu_length(&mut self, max: u32) {
        self.peer_max_pdu_length =
            if max == 0 { UNLIMITED_FRAGMENT } else { max.clamp(MINIMUM_PDU_SIZE, UNLIMITED_FRAGMENT) };
    }

    /// Largest PDV payload that fits one PDU for this peer.
    pub fn max_fragment(&self) -> usize {
        // PDU body = PDV item header (4-byte length, context id, control) + data.
        self.peer_max_pdu_length as usize - 6
    }

    /// Write the PDU in `scratch` and flush it: a TLS stream keeps what the
    /// socket did not take at once in its own buffer until flushed, and the
    /// peer waits for it (on plain TCP the flush does nothing).
    async fn write_scratch(&mut self) -> Result<(), PduError> {
        if let Some(limit) = self.stalled {
            return Err(PduError::Stalled(limit));
        }
        let Some(limit) = self.stall_limit else {
            self.stream.write_all(&self.scratch).await?;
            self.stream.flush().await?;
            return Ok(());
        };
        // The limit is on progress, not on the whole PDU: a slow link that
        // keeps taking bytes is never cut.
        let mut written = 0;
        while written < self.scratch.len() {
            let Ok(taken) = tokio::time::timeout(limit, self.stream.write(&self.scratch[written..])).await else {
                return Err(self.stall(limit));
            };
            let taken = taken?;
            if taken == 0 {
                return Err(PduError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            written += taken;
        }
        match tokio::time::timeout(limit, self.stream.flush()).await {
            Ok(flushed) => Ok(flushed?),
            Err(_) => Err(self.stall(limit)),
        }
    }

    fn stall(&mut self, limit: std::time::Duration) -> PduError {
        self.stalled = Some(limit);
        PduError::Stalled(limit)
    }

    pub async fn send_control(&mut self, pdu: &Pdu) -> Result<(), PduError> {
        self.scratch.clear();
        dicom_ul::pdu::write_pdu(&mut self.scratch, pdu).map_err(|error| PduError::Encode(error.to_string()))?;
        self.write_scratch().await
    }

    /// Send one fragment as its own PDU.
    pub async fn send_pdv(
        &mut self,
        context_id: u8,
        is_command: bool,
        is_last: bool,
        data: &[u8],
    ) -> Result<(), PduError> {
        self.scratch.clear();
        let item_length = data.len() as u32 + 2;
        self.scratch.push(P_DATA_TF);
        self.scratch.push(0);
        self.scratch.extend_from_slice(&(item_length + 4).to_be_bytes());
        self.scratch.extend_from_slice(&item_length.to_be_bytes());
        self.scratch.push(context_id);
        self.scratch.push(u8::from(is_command) | (u8::from(is_last) << 1));
        self.scratch.extend_from_slice(data);
        self.write_scratch().await
    }

    /// Send a command and a small data set as two PDVs of one PDU, in one
    /// write: half the system calls and TCP segments of sending them apart.
    /// The caller checks that both fit in one PDU for this peer.
    pub async fn send_pdv_pair(&mut self, context_id: u8, command: &[u8], data: &[u8]) -> Result<(), PduError> {
        self.scratch.clear();
        let pdu_length = (command.len() + 6 + data.len() + 6) as u32;
        self.scratch.push(P_DATA_TF);
        self.scratch.push(0);
        self.scratch.extend_from_slice(&pdu_length.to_be_bytes());
        for (is_command, part) in [(true, command), (false, data)] {
            self.scratch.extend_from_slice(&(part.len() as u32 + 2).to_be_bytes());
            self.scratch.push(context_id);
            self.scratch.push(u8::from(is_command) | 0x02);
            self.scratch.extend_from_slice(part);
        }
        self.write_scratch().await
    }

    /// Send a whole command or data set held in memory, fragmented as needed.
    pub async fn send_message_part(&mut self, context_id: u8, is_command: bool, data: &[u8]) -> Result<(), PduError> {
        let fragment = self.max_fragment();
        if data.is_empty() {
            return self.send_pdv(context_id, is_command, true, data).await;
        }
        let mut chunks = data.chunks(fragment).peekable();
        while let Some(chunk) = chunks.next() {
            self.send_pdv(context_id, is_command, chunks.peek().is_none(), chunk).await?;
        }
        Ok(())
    }

    pub async fn shutdown(&mut self) -> Result<(), PduError> {
        if let Some(limit) = self.stalled {
            return Err(PduError::Stalled(limit));
        }
        // TLS sends close_notify here, which a peer that stopped reading never takes.
        match self.stall_limit {
            Some(limit) => match tokio::time::timeout(limit, self.stream.shutdown()).await {
                Ok(done) => done?,
                Err(_) => return Err(self.stall(limit)),
            },
            None => self.stream.shutdown().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pdvs_round_trip_through_fragmentation() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut writer = PduWriter::new(client);
        writer.set_peer_max_pdu_length(1024);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        writer.send_message_part(3, false, &payload).await.expect("send");
        let mut reader = PduReader::new(server, 1024);
        let mut received = Vec::new();
        loop {
            let Incoming::Data(pdvs) = reader.read().await.expect("read") else { panic!("expected data") };
            let mut done = false;
            for pdv in pdvs {
                assert_eq!(pdv.context_id, 3);
                assert!(!pdv.is_command);
                received.extend_from_slice(&pdv.data);
                done = pdv.is_last;
            }
            if done {
                break;
            }
        }
        assert_eq!(received, payload);
    }

    #[tokio::test]
    async fn a_command_and_its_data_set_share_one_pdu() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut writer = PduWriter::new(client);
        writer.send_pdv_pair(5, b"command", b"data set").await.expect("send");
        let mut reader = PduReader::new(server, 16_384);
        let Incoming::Data(pdvs) = reader.read().await.expect("read") else { panic!("expected data") };
        assert_eq!(pdvs.len(), 2);
        assert!(pdvs[0].is_command && pdvs[0].is_last && &pdvs[0].data[..] == b"command");
        assert!(!pdvs[1].is_command && pdvs[1].is_last && &pdvs[1].data[..] == b"data set");
    }

    #[tokio::test]
    async fn oversized_and_malformed_pdus_are_errors() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = PduReader::new(server, 16_384);
        client.write_all(&[0x04, 0, 0x7F, 0xFF, 0xFF, 0xFF]).await.expect("write");
        assert!(matches!(reader.read().await, Err(PduError::TooLarge { .. })));

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = PduReader::new(server, 16_384);
        client.write_all(&[0x04, 0, 0, 0, 0, 8, 0, 0, 0, 200, 1, 3, 0, 0]).await.expect("write");
        assert!(matches!(reader.read().await, Err(PduError::Malformed(_))));

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = PduReader::new(server, 16_384);
        client.write_all(&[0x01, 0, 0, 0, 0, 4, 1, 2, 3, 4]).await.expect("write");
        assert!(matches!(reader.read().await, Err(PduError::Malformed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_no_bytes_stalls_the_write() {
        let (client, _unread_end) = tokio::io::duplex(1024);
        let mut writer = PduWriter::new(client);
        writer.set_stall_limit(std::time::Duration::from_secs(5));
        // Bounded, so that a write that never gives up fails the test instead of hanging it.
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(3600),
            writer.send_message_part(1, false, &[7u8; 64 * 1024]),
        )
        .await
        .expect("the write gave up");
        assert!(matches!(sent, Err(PduError::Stalled(limit)) if limit.as_secs() == 5), "{sent:?}");
        // Nothing more is tried on a stalled stream, an A-ABORT included: it fails at once.
        let started = tokio::time::Instant::now();
        let abort = writer.send_control(&Pdu::AbortRQ { source: dicom_ul::pdu::AbortRQSource::ServiceUser }).await;
        assert!(matches!(abort, Err(PduError::Stalled(_))), "{abort:?}");
        assert!(writer.shutdown().await.is_err());
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_peer_that_keeps_reading_is_not_cut() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut writer = PduWriter::new(client);
        writer.set_peer_max_pdu_length(64 * 1024);
        writer.set_stall_limit(std::time::Duration::from_secs(5));
        // 1 KiB every 2 s: the 64 KiB PDU takes over a minute, each wait 2 s.
        let reading = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut buffer = [0u8; 1024];
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                match server.read(&mut buffer).await.expect("read") {
                    0 => return received,
                    n => received.extend_from_slice(&buffer[..n]),
                }
            }
        });
        let started = tokio::time::Instant::now();
        writer.send_message_part(1, false, &[7u8; 60 * 1024]).await.expect("a slow reader is waited for");
        assert!(started.elapsed() > std::time::Duration::from_secs(60));
        drop(writer);
        assert_eq!(reading.await.expect("reader").len(), 60 * 1024 + 12);
    }

    #[tokio::test]
    async fn control_pdus_use_dicom_ul() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut writer = PduWriter::new(client);
        writer.send_control(&Pdu::ReleaseRQ).await.expect("send");
        let mut reader = PduReader::new(server, 16_384);
        assert!(matches!(reader.read().await.expect("read"), Incoming::Control(Pdu::ReleaseRQ)));
    }
}
