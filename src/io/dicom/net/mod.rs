//! DICOM networking for `fmseg serve`: a C-STORE / C-ECHO service class provider that writes
//! every object it acknowledges to disk first ([`scp`], [`inbox`]), and a C-STORE user that
//! sends a file to another node ([`scu`]).
//!
//! Associations and P-DATA framing come from `dicom-ul` (dicom-rs); the DIMSE command sets are
//! encoded here ([`dimse`]). Objects are stored as they arrive on the wire, in the negotiated
//! transfer syntax, behind a file meta group: nothing is decoded or re-encoded on the way in,
//! so compressed pixel data (JPEG, JPEG-LS, JPEG 2000, RLE, deflate) is kept bit for bit and
//! only decoded when the series is segmented.

pub mod dimse;
pub mod inbox;
pub mod scp;
pub mod scu;

/// Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
pub const ENHANCED_MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4.1";

pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// The transfer syntaxes the node accepts, in its order of preference when a sender offers
/// several in one presentation context: uncompressed, deflate, then the image codecs that
/// `fmseg`'s reader decodes (JPEG baseline, extended, lossless; JPEG-LS; JPEG 2000; RLE).
pub const ACCEPTED_TRANSFER_SYNTAXES: &[&str] = &[
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.1.99", // deflated explicit VR little endian
    "1.2.840.10008.1.2.4.50", // JPEG baseline (process 1)
    "1.2.840.10008.1.2.4.51", // JPEG extended (processes 2 and 4)
    "1.2.840.10008.1.2.4.57", // JPEG lossless (process 14)
    "1.2.840.10008.1.2.4.70", // JPEG lossless, first-order prediction (process 14, SV1)
    "1.2.840.10008.1.2.4.80", // JPEG-LS lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 lossless only
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.5",    // RLE lossless
];

/// An application entity title as the standard allows it: 1-16 characters of printable ASCII
/// other than backslash, not all spaces.
pub fn check_ae_title(aet: &str) -> Result<(), String> {
    if aet.is_empty() || aet.len() > 16 || aet.trim().is_empty() {
        return Err(format!("AE title {aet:?}: expected 1 to 16 characters, not all spaces"));
    }
    if let Some(c) = aet.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ') || *c == '\\') {
        return Err(format!("AE title {aet:?}: {c:?} is not allowed (printable ASCII other than backslash)"));
    }
    Ok(())
}

/// A node to send to: `AET@HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub aet: String,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Peer, String> {
        let bad = |m: &str| format!("{s:?}: {m} (expected AET@HOST:PORT, e.g. PACS@10.0.0.5:104)");
        let (aet, addr) = s.split_once('@').ok_or_else(|| bad("no '@'"))?;
        check_ae_title(aet).map_err(|e| bad(&e))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no ':PORT'"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if host.is_empty() || port == 0 {
            return Err(bad("empty host or port 0"));
        }
        Ok(Peer { aet: aet.into(), host: host.trim_start_matches('[').trim_end_matches(']').into(), port })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.aet, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.aet, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_say_why() {
        let p: Peer = "PACS@10.0.0.5:104".parse().unwrap();
        assert_eq!(p, Peer { aet: "PACS".into(), host: "10.0.0.5".into(), port: 104 });
        assert_eq!(p.to_string(), "PACS@10.0.0.5:104");
        assert_eq!("A@[::1]:11112".parse::<Peer>().unwrap().host, "::1");
        for bad in ["PACS", "@h:1", "P@h", "P@h:0", "P@h:x", "WAY_TOO_LONG_AE_TITLE@h:1", "A\\B@h:1"] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
        assert!(check_ae_title("FMSEG").is_ok());
        assert!(check_ae_title("    ").is_err());
    }
}
