//! One association as a storage and verification SCP: negotiate, answer C-ECHO, store each
//! C-STORE's object through the [`Inbox`] and only then answer it, until the peer releases or
//! aborts, or breaks a rule (then the association is aborted; the node goes on).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use dicom_ul::association::server::DefaultNegotiation;
use dicom_ul::association::server::{AccessControl, ServerAssociationOptions};
use dicom_ul::pdu::{
    AbortRQSource, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu, UserIdentity,
};

use super::dimse::{self, status, Command};
use super::inbox::{Inbox, Incoming, Stored};

/// What the node accepts and how long it waits.
#[derive(Clone, Debug)]
pub struct ScpConfig {
    pub aet: String,
    /// Calling AE titles allowed to associate; empty: any.
    pub allow_aet: Vec<String>,
    /// The largest PDU this node receives.
    pub max_pdu: u32,
    /// The largest object accepted; a larger one aborts its association.
    pub max_object_bytes: u64,
    /// An association idle this long (no PDU) is aborted.
    pub timeout: Duration,
    /// Store objects of any SOP class (non-images under `_other/`), not only MR.
    pub accept_other: bool,
}

/// Calling AE titles in the allow list (when there is one) calling this node's AE title.
struct Allow {
    allowed: Vec<String>,
}

impl AccessControl for Allow {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a.trim() == calling_ae_title.trim()) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// The negotiation options of a node: built once, shared by every association thread.
pub struct Scp {
    options: ServerAssociationOptions<'static, Allow, DefaultNegotiation>,
    pub config: ScpConfig,
}

/// How one association went (one log line).
#[derive(Debug, Default)]
pub struct AssociationLog {
    pub calling_aet: String,
    pub stored: usize,
    pub refused: usize,
    pub echoes: usize,
    pub bytes: u64,
    /// How it ended: `released`, `aborted by peer`, or why it was dropped or rejected.
    pub end: String,
    pub seconds: f64,
}

impl Scp {
    pub fn new(config: ScpConfig) -> Scp {
        let mut o = ServerAssociationOptions::new()
            .ae_access_control(Allow { allowed: config.allow_aet.clone() })
            .ae_title(config.aet.clone())
            .max_pdu_length(config.max_pdu)
            .read_timeout(config.timeout)
            .write_timeout(config.timeout)
            .promiscuous(config.accept_other)
            .with_abstract_syntax(super::VERIFICATION)
            .with_abstract_syntax(super::MR_IMAGE_STORAGE)
            .with_abstract_syntax(super::ENHANCED_MR_IMAGE_STORAGE);
        for ts in super::ACCEPTED_TRANSFER_SYNTAXES {
            o = o.with_transfer_syntax(*ts);
        }
        Scp { options: o, config }
    }

    /// Run one association to its end. `stored` is called for each object once it is on disk
    /// and before its success is answered.
    pub fn serve(&self, stream: TcpStream, inbox: &Inbox, stored: &(dyn Fn(&Stored) + Sync)) -> AssociationLog {
        let t = Instant::now();
        let mut log = AssociationLog::default();
        let mut assoc = match self.options.establish(stream) {
            Ok(a) => a,
            Err(e) => {
                log.end = format!("not established: {e}");
                log.seconds = t.elapsed().as_secs_f64();
                return log;
            }
        };
        log.calling_aet = dicom_ul::association::Association::peer_ae_title(&assoc).trim().to_string();
        let contexts: Vec<(u8, String, String)> = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance)
            .map(|pc| (pc.id, pc.abstract_syntax.clone(), pc.transfer_syntax.clone()))
            .collect();

        // A command being assembled, then the object it announced.
        let mut command: Vec<u8> = Vec::new();
        let mut current: Option<(u8, Command, Result<Incoming, super::inbox::Refusal>)> = None;
        let end = loop {
            let pdu = match assoc.receive() {
                Ok(p) => p,
                Err(e) => break Err(format!("receive: {e}")),
            };
            let values = match pdu {
                Pdu::PData { data } => data,
                Pdu::ReleaseRQ => {
                    let _ = assoc.send(&Pdu::ReleaseRP);
                    break Ok("released".to_string());
                }
                Pdu::AbortRQ { .. } => break Ok("aborted by the peer".to_string()),
                other => break Err(format!("unexpected {}", other.short_description())),
            };
            let mut failed = None;
            for v in values {
                let step = self.value(v, &contexts, &mut command, &mut current, inbox, stored, &mut log);
                match step.and_then(|reply| match reply {
                    Some((pc, cmd)) => assoc
                        .send(&Pdu::PData {
                            data: vec![PDataValue {
                                presentation_context_id: pc,
                                value_type: PDataValueType::Command,
                                is_last: true,
                                data: cmd.encode(),
                            }],
                        })
                        .map_err(|e| format!("send: {e}")),
                    None => Ok(()),
                }) {
                    Ok(()) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        log.end = match end {
            Ok(how) => how,
            Err(why) => {
                let _ = assoc.send(&Pdu::AbortRQ { source: AbortRQSource::ServiceUser });
                format!("dropped: {why}")
            }
        };
        log.seconds = t.elapsed().as_secs_f64();
        log
    }

    /// One P-DATA value: returns a response to send, if it completes a request.
    #[allow(clippy::too_many_arguments)]
    fn value(
        &self,
        v: PDataValue,
        contexts: &[(u8, String, String)],
        command: &mut Vec<u8>,
        current: &mut Option<(u8, Command, Result<Incoming, super::inbox::Refusal>)>,
        inbox: &Inbox,
        stored: &(dyn Fn(&Stored) + Sync),
        log: &mut AssociationLog,
    ) -> Result<Option<(u8, Command)>, String> {
        let Some((_, abstract_syntax, ts)) = contexts.iter().find(|(id, ..)| *id == v.presentation_context_id) else {
            return Err(format!("P-DATA on presentation context {} that was not accepted", v.presentation_context_id));
        };
        match v.value_type {
            PDataValueType::Command => {
                if current.is_some() {
                    return Err("a command in the middle of a data set".into());
                }
                if command.len() + v.data.len() > dimse::MAX_COMMAND_BYTES {
                    return Err("a command set over 64 KiB".into());
                }
                command.extend_from_slice(&v.data);
                if !v.is_last {
                    return Ok(None);
                }
                let cmd = Command::decode(command).map_err(|e| e.to_string())?;
                command.clear();
                match cmd.command_field {
                    dimse::C_ECHO_RQ => {
                        log.echoes += 1;
                        Ok(Some((v.presentation_context_id, Command::response_to(&cmd, status::SUCCESS, ""))))
                    }
                    dimse::C_STORE_RQ if cmd.has_data_set() => {
                        let sop_class = cmd.affected_sop_class_uid.trim_end_matches('\0');
                        let begun = if sop_class != abstract_syntax.trim_end_matches('\0') {
                            Err(super::inbox::Refusal {
                                status: status::DATA_SET_MISMATCH,
                                reason: format!("SOP class {sop_class} on a context for {abstract_syntax}"),
                            })
                        } else {
                            inbox.begin(sop_class, &cmd.affected_sop_instance_uid, ts, &log.calling_aet)
                        };
                        *current = Some((v.presentation_context_id, cmd, begun));
                        Ok(None)
                    }
                    dimse::C_STORE_RQ => Err("a C-STORE request without a data set".into()),
                    other => Ok(Some((
                        v.presentation_context_id,
                        Command::response_to(&cmd, status::UNRECOGNIZED_OPERATION, &format!("command {other:#06x}")),
                    ))
                    .filter(|_| other & 0x8000 == 0)),
                }
            }
            PDataValueType::Data => {
                let Some((pc, _, begun)) = current.as_mut() else {
                    return Err("a data set without a command".into());
                };
                if *pc != v.presentation_context_id {
                    return Err("a data set on another presentation context than its command".into());
                }
                if let Ok(incoming) = begun.as_mut() {
                    if incoming.bytes + v.data.len() as u64 > self.config.max_object_bytes {
                        return Err(format!(
                            "an object over the limit of {} MB (--max-object-mb)",
                            self.config.max_object_bytes >> 20
                        ));
                    }
                    if let Err(r) = incoming.write(&v.data) {
                        *begun = Err(r);
                    }
                }
                log.bytes += v.data.len() as u64;
                if !v.is_last {
                    return Ok(None);
                }
                let (pc, cmd, begun) = current.take().expect("checked above");
                let outcome = begun.and_then(|incoming| inbox.finish(incoming));
                let rsp = match outcome {
                    Ok(s) => {
                        stored(&s);
                        log.stored += 1;
                        Command::response_to(&cmd, status::SUCCESS, "")
                    }
                    Err(r) => {
                        log.refused += 1;
                        eprintln!(
                            "fmseg serve: refused {} from {}: {} (status {:#06x})",
                            cmd.affected_sop_instance_uid, log.calling_aet, r.reason, r.status
                        );
                        Command::response_to(&cmd, r.status, &r.reason)
                    }
                };
                Ok(Some((pc, rsp)))
            }
        }
    }
}

/// Answer a connection over the association limit with a transient rejection ("local limit
/// exceeded"), so that the sender retries later.
pub fn reject_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    if dicom_ul::pdu::write_pdu(&mut buf, &rj).is_ok() {
        use std::io::Write;
        let _ = stream.write_all(&buf);
    }
}
