//! Transfer syntaxes: how a data set is laid out on the wire and on disk.
//!
//! Haneul stores every instance as received, so it must be able to read the
//! header of any standard transfer syntax (to catalogue it) without being
//! able to decode its pixels. That only needs four properties per syntax.

/// The properties of a transfer syntax that matter for reading a data set header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSyntax {
    pub uid: &'static str,
    pub name: &'static str,
    /// VRs are written in the stream (everything but Implicit VR Little Endian).
    pub explicit_vr: bool,
    pub big_endian: bool,
    /// The data set after the file meta group is a raw deflate stream.
    pub deflated: bool,
    /// Pixel Data is encapsulated in fragments (compressed or video syntaxes).
    pub encapsulated: bool,
}

pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

const fn native(uid: &'static str, name: &'static str, explicit_vr: bool, big_endian: bool) -> TransferSyntax {
    TransferSyntax { uid, name, explicit_vr, big_endian, deflated: false, encapsulated: false }
}

const fn encapsulated(uid: &'static str, name: &'static str) -> TransferSyntax {
    TransferSyntax { uid, name, explicit_vr: true, big_endian: false, deflated: false, encapsulated: true }
}

/// Every transfer syntax of PS3.6 that Haneul accepts, retired JPEG processes included
/// because old modalities still send them.
pub static TRANSFER_SYNTAXES: &[TransferSyntax] = &[
    native(IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", false, false),
    native(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", true, false),
    TransferSyntax {
        uid: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        name: "Deflated Explicit VR Little Endian",
        explicit_vr: true,
        big_endian: false,
        deflated: true,
        encapsulated: false,
    },
    native(EXPLICIT_VR_BIG_ENDIAN, "Explicit VR Big Endian", true, true),
    encapsulated("1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian"),
    encapsulated("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    encapsulated("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    encapsulated("1.2.840.10008.1.2.4.52", "JPEG Extended (Process 3 & 5) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.53", "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.54", "JPEG Spectral Selection, Non-Hierarchical (Process 7 & 9) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.55", "JPEG Full Progression, Non-Hierarchical (Process 10 & 12) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.56", "JPEG Full Progression, Non-Hierarchical (Process 11 & 13) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)"),
    encapsulated("1.2.840.10008.1.2.4.58", "JPEG Lossless, Non-Hierarchical (Process 15) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.59", "JPEG Extended, Hierarchical (Process 16 & 18) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.60", "JPEG Extended, Hierarchical (Process 17 & 19) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.61", "JPEG Spectral Selection, Hierarchical (Process 20 & 22) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.62", "JPEG Spectral Selection, Hierarchical (Process 21 & 23) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.63", "JPEG Full Progression, Hierarchical (Process 24 & 26) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.64", "JPEG Full Progression, Hierarchical (Process 25 & 27) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.65", "JPEG Lossless, Hierarchical (Process 28) (Retired)"),
    encapsulated("1.2.840.10008.1.2.4.66", "JPEG Lossless, Hierarchical (Process 29) (Retired)"),
    encapsulated(
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
    ),
    encapsulated("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression"),
    encapsulated("1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression"),
    encapsulated("1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)"),
    encapsulated("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"),
    encapsulated("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)"),
    encapsulated("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image Compression"),
    encapsulated("1.2.840.10008.1.2.4.94", "JPIP Referenced"),
    encapsulated("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
    encapsulated("1.2.840.10008.1.2.4.100.1", "Fragmentable MPEG2 Main Profile / Main Level"),
    encapsulated("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"),
    encapsulated("1.2.840.10008.1.2.4.101.1", "Fragmentable MPEG2 Main Profile / High Level"),
    encapsulated("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1"),
    encapsulated("1.2.840.10008.1.2.4.102.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1"),
    encapsulated("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1"),
    encapsulated("1.2.840.10008.1.2.4.103.1", "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1"),
    encapsulated("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video"),
    encapsulated("1.2.840.10008.1.2.4.104.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video"),
    encapsulated("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"),
    encapsulated("1.2.840.10008.1.2.4.105.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"),
    encapsulated("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2"),
    encapsulated("1.2.840.10008.1.2.4.106.1", "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2"),
    encapsulated("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1"),
    encapsulated("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1"),
    encapsulated("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    encapsulated("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression"),
    encapsulated("1.2.840.10008.1.2.4.112", "JPEG XL"),
    encapsulated("1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)"),
    encapsulated(
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
    ),
    encapsulated("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression"),
    encapsulated("1.2.840.10008.1.2.5", "RLE Lossless"),
    encapsulated("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression"),
];

/// Look a transfer syntax up by UID, ignoring the trailing NUL or space padding of UI values.
pub fn lookup(uid: &str) -> Option<&'static TransferSyntax> {
    let uid = uid.trim_end_matches(['\0', ' ']);
    TRANSFER_SYNTAXES.iter().find(|ts| ts.uid == uid)
}

impl TransferSyntax {
    /// The three uncompressed, non-deflated encodings every node must understand.
    pub fn is_native_uncompressed(&self) -> bool {
        !self.encapsulated && !self.deflated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_trims_padding_and_knows_properties() {
        let ts = lookup("1.2.840.10008.1.2\0").expect("implicit VR LE is known");
        assert!(!ts.explicit_vr && !ts.big_endian && !ts.encapsulated);
        let jpeg = lookup("1.2.840.10008.1.2.4.50").expect("JPEG baseline is known");
        assert!(jpeg.encapsulated && jpeg.explicit_vr);
        assert!(lookup("1.2.840.10008.1.2.1.99").expect("deflate").deflated);
        assert!(lookup("1.2.840.113619.5.2").is_none(), "private syntaxes are not accepted");
    }

    #[test]
    fn uids_are_unique() {
        for (i, a) in TRANSFER_SYNTAXES.iter().enumerate() {
            for b in &TRANSFER_SYNTAXES[i + 1..] {
                assert_ne!(a.uid, b.uid);
            }
        }
    }
}
