//! STOW-RS request parsing without an archive behind it, for the `multipart`
//! fuzz target in `fuzz/`. Not an API: hidden from the docs, and free to
//! change with the fuzz crate.
//!
//! [`stow_multipart`] runs the handler's own request checks and multipart walk
//! ([`crate::stow::StowRequest`]) with a sink that, where the handler hands
//! instances to the archive core, keeps what the core would get so that the
//! fuzz target can check it.

use bytes::Bytes;
use haneul_dicom::Dataset;

use crate::error::ApiError;
use crate::stow::{keep_head, multipart_error, part_uids, JsonInstance, StowRequest, StowSink};

/// What a STOW-RS body held.
#[derive(Debug, Default)]
pub struct StowParts {
    /// `application/dicom` parts: their SOP Instance UID when the start of
    /// the part has a readable file meta group (what a refusal is named by).
    pub part10: Vec<Option<String>>,
    /// Part 10 files built from the JSON metadata parts, as `stow` would
    /// store them; `None` for an instance `stow` refuses before storing.
    pub from_json: Vec<Option<Vec<u8>>>,
}

impl StowSink for StowParts {
    async fn part10(&mut self, mut field: multer::Field<'_>) -> Result<(), ApiError> {
        let mut head = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            keep_head(&mut head, &chunk);
        }
        self.part10.push(part_uids(&head).map(|(_, sop_instance)| sop_instance));
        Ok(())
    }

    async fn json_instance(&mut self, dataset: Dataset) {
        self.from_json.push(JsonInstance::build(dataset).file.ok());
    }

    fn is_empty(&self) -> bool {
        self.part10.is_empty() && self.from_json.is_empty()
    }
}

/// Parse a STOW-RS request: `content_type` is the request's Content-Type,
/// `body` its bytes in the chunks they arrived in, `limit` the largest body
/// accepted (`WebConfig::max_upload_bytes`). The error is the one `stow`
/// would answer with.
pub async fn stow_multipart(content_type: &str, body: Vec<Bytes>, limit: u64) -> Result<StowParts, ApiError> {
    let request = StowRequest::parse(content_type)?;
    let stream = futures_util::stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
    let mut parts = StowParts::default();
    request.walk(stream, limit, &mut parts).await?;
    Ok(parts)
}
