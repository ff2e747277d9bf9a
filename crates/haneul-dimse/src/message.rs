//! DIMSE messages over an association: a command set, optionally followed by
//! a data set, each carried in PDV fragments.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use dicom_ul::pdu::Pdu;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::command::{Command, CommandError};
use crate::pdu::{Incoming, PduError, PduReader, PduWriter, Pdv};

/// Largest command set accepted; real ones are a few hundred bytes.
const MAX_COMMAND_LENGTH: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("invalid command set: {0}")]
    Command(#[from] CommandError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("association aborted by peer")]
    Aborted,
    #[error("data set larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer idle for {0:?}")]
    Timeout(std::time::Duration),
}

/// What the next message of the peer is.
#[derive(Debug)]
pub enum Received {
    Command { context_id: u8, command: Command },
    ReleaseRequest,
    ReleaseResponse,
}

/// Reads commands and data sets.
pub struct DimseReader<R> {
    pdus: PduReader<R>,
    pending: VecDeque<Pdv>,
    /// Fragments of a command not yet complete (kept here so reads stay cancel-safe).
    partial_command: Vec<u8>,
    partial_context: Option<u8>,
    /// How long a peer may pause in the middle of sending a data set.
    data_timeout: Option<std::time::Duration>,
}

impl<R: AsyncRead + Unpin> DimseReader<R> {
    pub fn new(pdus: PduReader<R>) -> Self {
        DimseReader {
            pdus,
            pending: VecDeque::new(),
            partial_command: Vec::new(),
            partial_context: None,
            data_timeout: None,
        }
    }

    /// Abort data sets whose next fragment does not arrive within `timeout`,
    /// so a stalled peer cannot hold an association, a file and memory forever.
    pub fn set_data_timeout(&mut self, timeout: std::time::Duration) {
        self.data_timeout = Some(timeout);
    }

    async fn next_pdv(&mut self) -> Result<Option<Pdv>, DimseError> {
        if let Some(pdv) = self.pending.pop_front() {
            return Ok(Some(pdv));
        }
        match self.pdus.read().await? {
            Incoming::Data(pdvs) => {
                self.pending.extend(pdvs);
                Ok(self.pending.pop_front())
            }
            Incoming::Control(Pdu::AbortRQ { .. }) => Err(DimseError::Aborted),
            Incoming::Control(Pdu::ReleaseRQ) => {
                self.pending.clear();
                Ok(None)
            }
            Incoming::Control(Pdu::ReleaseRP) => Err(DimseError::Protocol("unexpected A-RELEASE-RP".into())),
            Incoming::Control(other) => Err(DimseError::Protocol(format!("unexpected {}", other.short_description()))),
        }
    }

    /// [`DimseReader::next_command`], failing with [`DimseError::Timeout`]
    /// when none comes within `limit`.
    pub async fn next_command_within(&mut self, limit: std::time::Duration) -> Result<Received, DimseError> {
        tokio::time::timeout(limit, self.next_command()).await.map_err(|_| DimseError::Timeout(limit))?
    }

    /// The next command. Cancel-safe: partial fragments are kept across calls.
    pub async fn next_command(&mut self) -> Result<Received, DimseError> {
        loop {
            if let Some(front) = self.pending.front() {
                if !front.is_command {
                    return Err(DimseError::Protocol("data fragment where a command was expected".into()));
                }
            }
            let pdv = match self.pending.pop_front() {
                Some(pdv) => pdv,
                None => match self.pdus.read().await? {
                    Incoming::Data(pdvs) => {
                        self.pending.extend(pdvs);
                        continue;
                    }
                    Incoming::Control(Pdu::ReleaseRQ) => return Ok(Received::ReleaseRequest),
                    Incoming::Control(Pdu::ReleaseRP) => return Ok(Received::ReleaseResponse),
                    Incoming::Control(Pdu::AbortRQ { .. }) => return Err(DimseError::Aborted),
                    Incoming::Control(other) => {
                        return Err(DimseError::Protocol(format!("unexpected {}", other.short_description())))
                    }
                },
            };
            if self.partial_context.is_some_and(|id| id != pdv.context_id) {
                return Err(DimseError::Protocol("command fragments on different presentation contexts".into()));
            }
            self.partial_context = Some(pdv.context_id);
            if self.partial_command.len() + pdv.data.len() > MAX_COMMAND_LENGTH {
                return Err(DimseError::Protocol("command set too long".into()));
            }
            self.partial_command.extend_from_slice(&pdv.data);
            if pdv.is_last {
                let bytes = std::mem::take(&mut self.partial_command);
                self.partial_context = None;
                let command = Command::decode(&bytes)?;
                return Ok(Received::Command { context_id: pdv.context_id, command });
            }
        }
    }

    /// The next fragment of the data set following a command: `(bytes, is_last)`.
    pub async fn next_data_fragment(&mut self, context_id: u8) -> Result<(Bytes, bool), DimseError> {
        let next = match self.data_timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, self.next_pdv()).await.map_err(|_| DimseError::Timeout(timeout))?
            }
            None => self.next_pdv().await,
        };
        let Some(pdv) = next? else {
            return Err(DimseError::Protocol("A-RELEASE-RQ in the middle of a data set".into()));
        };
        if pdv.is_command {
            return Err(DimseError::Protocol("command fragment where data was expected".into()));
        }
        if pdv.context_id != context_id {
            return Err(DimseError::Protocol(format!(
                "data set on presentation context {} after a command on {context_id}",
                pdv.context_id
            )));
        }
        Ok((pdv.data, pdv.is_last))
    }

    /// Stream the data set following a C-STORE request into `ingest`, to its
    /// last fragment even when writing fails (the failure is returned, for the
    /// response's status, while the association stays usable). More than
    /// `limit` bytes end the association instead: unbounded input is not
    /// drained, and the partial blob goes when `ingest` is dropped.
    pub async fn stream_data_set(
        &mut self,
        context_id: u8,
        ingest: &mut haneul_core::Ingest,
        limit: u64,
    ) -> Result<Option<haneul_core::IngestError>, DimseError> {
        let mut write_error = None;
        loop {
            let (fragment, last) = self.next_data_fragment(context_id).await?;
            if ingest.len() + fragment.len() as u64 > limit {
                return Err(DimseError::TooLarge(limit));
            }
            if write_error.is_none() {
                if let Err(error) = ingest.write(&fragment).await {
                    write_error = Some(error);
                }
            }
            if last {
                return Ok(write_error);
            }
        }
    }

    /// Read a whole (small) data set into memory.
    pub async fn read_data_set(&mut self, context_id: u8, limit: u64) -> Result<Vec<u8>, DimseError> {
        let mut data = Vec::new();
        loop {
            let (fragment, last) = self.next_data_fragment(context_id).await?;
            if (data.len() + fragment.len()) as u64 > limit {
                return Err(DimseError::TooLarge(limit));
            }
            data.extend_from_slice(&fragment);
            if last {
                return Ok(data);
            }
        }
    }

    /// Read and discard a data set (after a request was refused before its data arrived).
    pub async fn skip_data_set(&mut self, context_id: u8, limit: u64) -> Result<(), DimseError> {
        let mut seen = 0u64;
        loop {
            let (fragment, last) = self.next_data_fragment(context_id).await?;
            seen += fragment.len() as u64;
            if seen > limit {
                return Err(DimseError::TooLarge(limit));
            }
            if last {
                return Ok(());
            }
        }
    }
}

/// Sends commands and data sets.
pub struct DimseWriter<W> {
    pdus: PduWriter<W>,
}

impl<W: AsyncWrite + Unpin> DimseWriter<W> {
    pub fn new(pdus: PduWriter<W>) -> Self {
        DimseWriter { pdus }
    }

    pub fn pdus(&mut self) -> &mut PduWriter<W> {
        &mut self.pdus
    }

    /// Send a command and, if given, its data set from memory.
    pub async fn send(&mut self, context_id: u8, command: &Command, data: Option<&[u8]>) -> Result<(), DimseError> {
        let mut command = command.clone();
        command.set_has_data_set(data.is_some());
        let encoded = command.encode();
        if let Some(data) = data {
            // Both PDVs in one PDU when they fit (C-FIND responses, identifiers).
            if encoded.len() + data.len() + 12 <= self.pdus.max_fragment() + 6 {
                return Ok(self.pdus.send_pdv_pair(context_id, &encoded, data).await?);
            }
        }
        self.pdus.send_message_part(context_id, true, &encoded).await?;
        if let Some(data) = data {
            self.pdus.send_message_part(context_id, false, data).await?;
        }
        Ok(())
    }

    /// Send a command and a data set given as consecutive parts (a header and
    /// a shared pixel buffer, say) without joining them.
    pub async fn send_parts(&mut self, context_id: u8, command: &Command, parts: &[&[u8]]) -> Result<(), DimseError> {
        let mut command = command.clone();
        command.set_has_data_set(true);
        self.pdus.send_message_part(context_id, true, &command.encode()).await?;
        let fragment = self.pdus.max_fragment();
        let total: usize = parts.iter().map(|part| part.len()).sum();
        if total == 0 {
            return Ok(self.pdus.send_pdv(context_id, false, true, &[]).await?);
        }
        let mut sent = 0usize;
        for part in parts {
            for piece in part.chunks(fragment) {
                sent += piece.len();
                self.pdus.send_pdv(context_id, false, sent == total, piece).await?;
            }
        }
        Ok(())
    }

    /// Send a command followed by `length` bytes of `file` from `offset`,
    /// read off the async threads a chunk at a time.
    pub async fn send_with_file(
        &mut self,
        context_id: u8,
        command: &Command,
        file: std::fs::File,
        offset: u64,
        length: u64,
    ) -> Result<(), DimseError> {
        let mut command = command.clone();
        command.set_has_data_set(true);
        self.pdus.send_message_part(context_id, true, &command.encode()).await?;
        let fragment = self.pdus.max_fragment();
        // Read about 1 MiB at a time, a whole number of fragments.
        let chunk_size = (((1 << 20) / fragment).max(1) * fragment) as u64;
        let mut file = Some(file);
        let mut position = offset;
        let end = offset + length;
        if length == 0 {
            return Ok(self.pdus.send_pdv(context_id, false, true, &[]).await?);
        }
        while position < end {
            let want = chunk_size.min(end - position) as usize;
            let mut handle = file.take().ok_or_else(|| DimseError::Protocol("file handle lost".into()))?;
            let (handle, chunk) = tokio::task::spawn_blocking(move || {
                let mut chunk = vec![0u8; want];
                let result = handle.seek(SeekFrom::Start(position)).and_then(|_| handle.read_exact(&mut chunk));
                (handle, result.map(|_| chunk))
            })
            .await
            .map_err(|error| DimseError::Io(std::io::Error::other(error.to_string())))?;
            file = Some(handle);
            let chunk = chunk?;
            position += chunk.len() as u64;
            let mut pieces = chunk.chunks(fragment).peekable();
            while let Some(piece) = pieces.next() {
                let last = position >= end && pieces.peek().is_none();
                self.pdus.send_pdv(context_id, false, last, piece).await?;
            }
        }
        Ok(())
    }

    pub async fn send_control(&mut self, pdu: &Pdu) -> Result<(), DimseError> {
        Ok(self.pdus.send_control(pdu).await?)
    }

    pub async fn shutdown(&mut self) {
        let _ = self.pdus.shutdown().await;
    }
}
