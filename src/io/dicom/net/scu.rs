//! C-STORE as a user: send one DICOM file to a node and report its answer.
//!
//! The file's SOP class is proposed with its own transfer syntax first and explicit and
//! implicit VR little endian after it; when the peer picks another than the file's, the data
//! set is re-encoded (fmseg's SEG objects are explicit VR little endian, which every node
//! accepts or can be re-encoded to implicit).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use dicom_ul::ClientAssociationOptions;

use super::dimse::{self, status, Command};
use super::Peer;

/// How a send went wrong: whether trying again may help.
#[derive(Debug)]
pub enum SendError {
    /// Connection, association or transport: worth retrying.
    Transient(String),
    /// The peer answered with a failure status, or the file cannot be sent: retrying the same
    /// object will not help (still retried a few times: a peer's "out of resources" passes).
    Refused { status: u16, reason: String },
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient(m) => write!(f, "{m}"),
            SendError::Refused { status, reason } => write!(f, "refused with status {status:#06x}: {reason}"),
        }
    }
}

/// Send `file` to `peer` as `calling_aet` in one association; the peer's status on success
/// (0x0000, or a warning).
pub fn store_file(file: &Path, peer: &Peer, calling_aet: &str, timeout: Duration) -> Result<u16, SendError> {
    let refused = |reason: String| SendError::Refused { status: status::CANNOT_UNDERSTAND, reason };
    let obj = dicom_object::OpenFileOptions::new()
        .open_file(file)
        .map_err(|e| refused(format!("{}: {e}", file.display())))?;
    let meta = obj.meta();
    let sop_class = meta.media_storage_sop_class_uid().trim_end_matches('\0').to_string();
    let sop_instance = meta.media_storage_sop_instance_uid().trim_end_matches('\0').to_string();
    let own_ts = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let mut offered = vec![own_ts.clone()];
    for ts in [super::EXPLICIT_VR_LITTLE_ENDIAN, super::IMPLICIT_VR_LITTLE_ENDIAN] {
        if !offered.iter().any(|o| o == ts) {
            offered.push(ts.to_string());
        }
    }
    let transient = |what: &str, e: &dyn std::fmt::Display| SendError::Transient(format!("{peer}: {what}: {e}"));
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(calling_aet)
        .called_ae_title(peer.aet.as_str())
        .with_presentation_context(sop_class.as_str(), offered.iter().map(String::as_str).collect())
        .connection_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .establish((peer.host.as_str(), peer.port))
        .map_err(|e| transient("association", &e))?;
    let Some(pc) = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance)
        .cloned()
    else {
        let _ = assoc.abort();
        return Err(SendError::Refused {
            status: status::SOP_CLASS_NOT_SUPPORTED,
            reason: format!("{peer} accepts no presentation context for SOP class {sop_class}"),
        });
    };
    let ts = TransferSyntaxRegistry.get(&pc.transfer_syntax).ok_or_else(|| {
        refused(format!("{peer} chose transfer syntax {} that fmseg cannot write", pc.transfer_syntax))
    })?;
    let mut data = Vec::new();
    obj.write_dataset_with_ts(&mut data, ts)
        .map_err(|e| refused(format!("{}: encoding as {}: {e}", file.display(), pc.transfer_syntax)))?;
    drop(obj);

    let rq = Command::store_rq(1, &sop_class, &sop_instance);
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc.id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: rq.encode(),
            }],
        })
        .map_err(|e| transient("sending the command", &e))?;
    {
        let mut w = assoc.send_pdata(pc.id);
        w.write_all(&data).map_err(|e| transient("sending the data set", &e))?;
        w.finish().map_err(|e| transient("sending the data set", &e))?;
    }
    let mut rsp_bytes = Vec::new();
    let rsp = loop {
        match assoc.receive().map_err(|e| transient("waiting for the response", &e))? {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        rsp_bytes.extend_from_slice(&v.data);
                    }
                    if v.is_last && v.value_type == PDataValueType::Command {
                        break;
                    }
                }
                if let Ok(c) = Command::decode(&rsp_bytes) {
                    break c;
                }
            }
            Pdu::AbortRQ { .. } => return Err(SendError::Transient(format!("{peer} aborted the association"))),
            other => return Err(SendError::Transient(format!("{peer}: unexpected {}", other.short_description()))),
        }
    };
    let _ = assoc.release();
    let st = rsp.status.unwrap_or(status::CANNOT_UNDERSTAND);
    if rsp.command_field != dimse::C_STORE_RSP {
        return Err(SendError::Transient(format!(
            "{peer} answered command {:#06x}, not C-STORE-RSP",
            rsp.command_field
        )));
    }
    if status::stored(st) {
        Ok(st)
    } else {
        Err(SendError::Refused {
            status: st,
            reason: if rsp.error_comment.is_empty() { "no comment".into() } else { rsp.error_comment },
        })
    }
}

/// C-ECHO: whether `peer` answers (used by `fmseg serve` at start to warn about a destination
/// that is down, and by tests).
pub fn echo(peer: &Peer, calling_aet: &str, timeout: Duration) -> Result<(), String> {
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(calling_aet)
        .called_ae_title(peer.aet.as_str())
        .with_abstract_syntax(super::VERIFICATION)
        .connection_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .establish((peer.host.as_str(), peer.port))
        .map_err(|e| format!("{peer}: {e}"))?;
    let pc = assoc.presentation_contexts().first().map(|p| p.id).ok_or_else(|| format!("{peer}: no context"))?;
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: Command::echo_rq(1).encode(),
            }],
        })
        .map_err(|e| format!("{peer}: {e}"))?;
    match assoc.receive().map_err(|e| format!("{peer}: {e}"))? {
        Pdu::PData { data } => {
            let c = Command::decode(&data.iter().flat_map(|v| v.data.iter().copied()).collect::<Vec<u8>>())
                .map_err(|e| format!("{peer}: {e}"))?;
            let _ = assoc.release();
            match c.status {
                Some(status::SUCCESS) => Ok(()),
                s => Err(format!("{peer}: C-ECHO status {s:?}")),
            }
        }
        other => Err(format!("{peer}: unexpected {}", other.short_description())),
    }
}
