//! DIMSE command sets (PS3.7 section 9 and annex E): the few fields C-ECHO and C-STORE use,
//! encoded and decoded by hand.
//!
//! A command set is always implicit VR little endian, group 0000 only, led by its group length.
//! It is small and fixed in shape, so a direct codec is shorter than going through a general
//! dataset writer, and the decoder can bound every length it reads against the bytes it got (a
//! command comes off the network from anyone who can connect).

use std::fmt;

/// C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

/// Status values (PS3.4 annex B and C.4).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (the disk is nearly full).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Unrecognised operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;

    /// Success or a warning (0xB000-0xBFFF, 0x0001, 0x0107, 0x0116): the object is stored.
    pub fn stored(s: u16) -> bool {
        s == SUCCESS || (0xB000..=0xBFFF).contains(&s) || matches!(s, 0x0001 | 0x0107 | 0x0116)
    }
}

/// The fields of a command set that fmseg reads or writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub affected_sop_class_uid: String,
    pub command_field: u16,
    pub message_id: Option<u16>,
    pub message_id_being_responded_to: Option<u16>,
    pub priority: Option<u16>,
    pub data_set_type: u16,
    pub status: Option<u16>,
    pub affected_sop_instance_uid: String,
    pub error_comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed DIMSE command: {}", self.0)
    }
}

impl std::error::Error for CommandError {}

/// The largest command set accepted: real ones are a few hundred bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

impl Command {
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }

    pub fn echo_rq(message_id: u16) -> Command {
        Command {
            affected_sop_class_uid: super::VERIFICATION.into(),
            command_field: C_ECHO_RQ,
            message_id: Some(message_id),
            data_set_type: NO_DATA_SET,
            ..Command::default()
        }
    }

    pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Command {
        Command {
            affected_sop_class_uid: sop_class.into(),
            command_field: C_STORE_RQ,
            message_id: Some(message_id),
            priority: Some(0),
            data_set_type: 0x0000,
            affected_sop_instance_uid: sop_instance.into(),
            ..Command::default()
        }
    }

    /// The response to request `rq` with `status` (and, for failures, a short comment).
    pub fn response_to(rq: &Command, status: u16, comment: &str) -> Command {
        Command {
            affected_sop_class_uid: rq.affected_sop_class_uid.clone(),
            command_field: rq.command_field | 0x8000,
            message_id_being_responded_to: rq.message_id,
            data_set_type: NO_DATA_SET,
            status: Some(status),
            affected_sop_instance_uid: rq.affected_sop_instance_uid.clone(),
            // LO: at most 64 characters
            error_comment: comment.chars().filter(|c| !c.is_control() && *c != '\\').take(64).collect(),
            ..Command::default()
        }
    }

    /// Implicit VR little endian, elements in tag order, group length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        let uid = |body: &mut Vec<u8>, elem: u16, v: &str| {
            if !v.is_empty() {
                put(body, elem, v.as_bytes(), 0);
            }
        };
        let us = |body: &mut Vec<u8>, elem: u16, v: Option<u16>| {
            if let Some(v) = v {
                put(body, elem, &v.to_le_bytes(), 0);
            }
        };
        uid(&mut body, 0x0002, &self.affected_sop_class_uid);
        us(&mut body, 0x0100, Some(self.command_field));
        us(&mut body, 0x0110, self.message_id);
        us(&mut body, 0x0120, self.message_id_being_responded_to);
        us(&mut body, 0x0700, self.priority);
        us(&mut body, 0x0800, Some(self.data_set_type));
        us(&mut body, 0x0900, self.status);
        if !self.error_comment.is_empty() {
            put(&mut body, 0x0902, self.error_comment.as_bytes(), b' ');
        }
        uid(&mut body, 0x1000, &self.affected_sop_instance_uid);
        let mut out = Vec::with_capacity(body.len() + 12);
        put(&mut out, 0x0000, &(body.len() as u32).to_le_bytes(), 0);
        out.extend_from_slice(&body);
        out
    }

    /// Decode a command set; unknown group-0000 elements are skipped, every length is checked.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let bad = |m: String| CommandError(m);
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(bad(format!("{} bytes (at most {MAX_COMMAND_BYTES})", bytes.len())));
        }
        let mut c = Command { data_set_type: NO_DATA_SET, ..Command::default() };
        let (mut field, mut dst) = (None, None);
        let mut at = 0usize;
        while at < bytes.len() {
            let head = bytes.get(at..at + 8).ok_or_else(|| bad(format!("element header cut at byte {at}")))?;
            let group = u16::from_le_bytes([head[0], head[1]]);
            let elem = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if group != 0 {
                return Err(bad(format!("element ({group:04X},{elem:04X}) outside the command group")));
            }
            let value = bytes.get(at + 8..(at + 8).saturating_add(len)).ok_or_else(|| {
                bad(format!("element (0000,{elem:04X}) declares {len} bytes, {} left", bytes.len() - at - 8))
            })?;
            let us = || -> Result<u16, CommandError> {
                match value {
                    [a, b] => Ok(u16::from_le_bytes([*a, *b])),
                    _ => Err(bad(format!("element (0000,{elem:04X}) is {} bytes, not a US", value.len()))),
                }
            };
            let text = || String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_string();
            match elem {
                0x0002 => c.affected_sop_class_uid = text(),
                0x0100 => field = Some(us()?),
                0x0110 => c.message_id = Some(us()?),
                0x0120 => c.message_id_being_responded_to = Some(us()?),
                0x0700 => c.priority = Some(us()?),
                0x0800 => dst = Some(us()?),
                0x0900 => c.status = Some(us()?),
                0x0902 => c.error_comment = text(),
                0x1000 => c.affected_sop_instance_uid = text(),
                _ => {}
            }
            at += 8 + len;
        }
        c.command_field = field.ok_or_else(|| bad("no Command Field (0000,0100)".into()))?;
        c.data_set_type = dst.ok_or_else(|| bad("no Command Data Set Type (0000,0800)".into()))?;
        Ok(c)
    }
}

/// What the node makes of a byte stream from a peer: each PDU in turn (at most `max_pdu` bytes
/// each, as the node negotiates), each P-DATA command fragment run assembled and decoded. The
/// first error ends it, as it ends an association. For the `dicom_net` fuzz target.
pub fn read_stream(bytes: &[u8], max_pdu: u32) -> Result<Vec<Command>, String> {
    use dicom_ul::pdu::{PDataValueType, Pdu};
    let mut buf = bytes;
    let mut commands = Vec::new();
    let mut command: Vec<u8> = Vec::new();
    loop {
        let pdu = match dicom_ul::read_pdu(&mut buf, max_pdu, true) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(commands),
            Err(e) => return Err(e.to_string()),
        };
        if let Pdu::PData { data } = pdu {
            for v in data.into_iter().filter(|v| v.value_type == PDataValueType::Command) {
                if command.len() + v.data.len() > MAX_COMMAND_BYTES {
                    return Err("a command set over 64 KiB".into());
                }
                command.extend_from_slice(&v.data);
                if v.is_last {
                    commands.push(Command::decode(&command).map_err(|e| e.to_string())?);
                    command.clear();
                }
            }
        }
    }
}

/// A peer's opening of an association as bytes: A-ASSOCIATE-RQ for verification and MR
/// storage, a C-ECHO, a C-STORE with a few data bytes, A-RELEASE-RQ (the fuzz seed).
pub fn sample_stream() -> Vec<u8> {
    use dicom_ul::pdu::*;
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "SCANNER".into(),
        called_ae_title: "FMSEG".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: super::MR_IMAGE_STORAGE.into(),
            transfer_syntaxes: vec![super::EXPLICIT_VR_LITTLE_ENDIAN.into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let pdata = |value_type: PDataValueType, data: Vec<u8>| Pdu::PData {
        data: vec![PDataValue { presentation_context_id: 1, value_type, is_last: true, data }],
    };
    let mut out = Vec::new();
    for p in [
        rq,
        pdata(PDataValueType::Command, Command::echo_rq(1).encode()),
        pdata(PDataValueType::Command, Command::store_rq(2, super::MR_IMAGE_STORAGE, "1.2.3.4").encode()),
        pdata(PDataValueType::Data, vec![0x08, 0x00, 0x16, 0x00, 0x02, 0x00, 0x00, 0x00, b'1', 0]),
        Pdu::ReleaseRQ,
    ] {
        dicom_ul::write_pdu(&mut out, &p).expect("a valid PDU");
    }
    out
}

/// One implicit-VR element of group 0000, padded to even length with `pad`.
fn put(out: &mut Vec<u8>, elem: u16, value: &[u8], pad: u8) {
    let len = value.len() + value.len() % 2;
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(value);
    if value.len() % 2 == 1 {
        out.push(pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips_and_has_its_group_length() {
        let rq = Command::store_rq(7, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5");
        let b = rq.encode();
        // (0000,0000) UL = bytes after it
        assert_eq!(&b[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, b.len() - 12);
        let back = Command::decode(&b).unwrap();
        assert_eq!(back, rq);
        assert!(back.has_data_set());
        // odd-length UIDs are padded with NUL
        assert_eq!(b.len() % 2, 0);
    }

    #[test]
    fn response_echoes_the_request() {
        let rq = Command::store_rq(9, "1.2", "1.2.3");
        let rsp = Command::decode(&Command::response_to(&rq, status::OUT_OF_RESOURCES, "disk full").encode()).unwrap();
        assert_eq!(rsp.command_field, C_STORE_RSP);
        assert_eq!(rsp.message_id_being_responded_to, Some(9));
        assert_eq!(rsp.status, Some(0xA700));
        assert_eq!(rsp.error_comment, "disk full");
        assert!(!rsp.has_data_set());
        assert!(!status::stored(0xA700) && status::stored(0xB007) && status::stored(0));
    }

    #[test]
    fn a_peer_stream_reads_back() {
        let cmds = read_stream(&sample_stream(), 65536).unwrap();
        assert_eq!(cmds.iter().map(|c| c.command_field).collect::<Vec<_>>(), [C_ECHO_RQ, C_STORE_RQ]);
        let s = sample_stream();
        assert!(read_stream(&s[..s.len() - 3], 65536).is_ok(), "a cut PDU is not an error yet, only incomplete");
        assert!(read_stream(&[0x04, 0, 0xff, 0xff, 0xff, 0xff], 65536).is_err());
    }

    #[test]
    fn malformed_commands_are_errors_not_panics() {
        let good = Command::echo_rq(1).encode();
        for cut in 0..good.len() {
            let _ = Command::decode(&good[..cut]);
        }
        // a length far past the end
        let mut b = good.clone();
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Command::decode(&b).unwrap_err().to_string().contains("declares"));
        // another group
        let mut b = good.clone();
        b[0] = 8;
        assert!(Command::decode(&b).is_err());
        // no command field
        let mut only_len = Vec::new();
        put(&mut only_len, 0, &0u32.to_le_bytes(), 0);
        assert!(Command::decode(&only_len).unwrap_err().to_string().contains("Command Field"));
    }
}
