//! Errors of this crate.

/// Why pixel data could not be extracted, decoded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    /// A required image attribute is absent or has an impossible value.
    #[error("invalid image attribute {name}: {detail}")]
    Attribute { name: &'static str, detail: String },
    /// The image is valid DICOM but this crate cannot handle it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No decoder for this transfer syntax.
    #[error("cannot decode transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    #[error("frame {index} does not exist: the image has {frames} frame(s)")]
    FrameOutOfRange { index: u32, frames: u32 },
    /// Native pixel data shorter than the attributes require.
    #[error("pixel data too short: {needed} bytes needed, {available} available")]
    Truncated { needed: u64, available: u64 },
    /// Encapsulated pixel data whose fragments cannot be grouped into frames.
    #[error("cannot find the frames of encapsulated pixel data: {0}")]
    Fragments(String),
    /// Corrupt compressed data.
    #[error("corrupt {codec} data: {detail}")]
    Decode { codec: &'static str, detail: String },
    /// Encoding the rendered image failed.
    #[error("encoding the rendered image failed: {0}")]
    Encode(String),
    /// An invalid rendering parameter (window, viewport).
    #[error("invalid rendering parameter: {0}")]
    Parameter(String),
}

impl PixelError {
    pub(crate) fn attribute(name: &'static str, detail: impl Into<String>) -> Self {
        PixelError::Attribute { name, detail: detail.into() }
    }

    pub(crate) fn decode(codec: &'static str, detail: impl Into<String>) -> Self {
        PixelError::Decode { codec, detail: detail.into() }
    }
}

pub type Result<T> = std::result::Result<T, PixelError>;
