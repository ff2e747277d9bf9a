//! DIMSE command sets (PS3.7 E): group 0000 elements, always Implicit VR
//! Little Endian, whatever transfer syntax the data set uses.

use std::collections::BTreeMap;

/// Command Field values.
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// Status codes used by Haneul (PS3.7 C, PS3.4 B, C, J).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const PENDING: u16 = 0xFF00;
    pub const PENDING_WARNING: u16 = 0xFF01;
    pub const CANCEL: u16 = 0xFE00;
    /// C-STORE warning: elements discarded (used for a duplicate whose first copy was kept).
    pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB006;
    /// C-MOVE/C-GET: sub-operations complete, one or more failures or warnings.
    pub const WARNING_SUBOPERATIONS: u16 = 0xB000;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
    pub const OUT_OF_RESOURCES_SUBOPERATIONS: u16 = 0xA702;
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    pub const UNABLE_TO_PROCESS: u16 = 0xC001;
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    /// Refused: not authorized (PS3.7 C.5): the requester's role does not allow the operation.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    pub const MISTYPED_ARGUMENT: u16 = 0x0212;
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;

    pub fn is_pending(status: u16) -> bool {
        status == PENDING || status == PENDING_WARNING
    }

    pub fn is_success_or_warning(status: u16) -> bool {
        status == SUCCESS || (status & 0xF000) == 0xB000 || status == 0x0001 || status == 0x0107 || status == 0x0116
    }
}

/// Command element numbers in group 0000.
pub mod tag {
    pub const GROUP_LENGTH: u16 = 0x0000;
    pub const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
    pub const REQUESTED_SOP_CLASS_UID: u16 = 0x0003;
    pub const COMMAND_FIELD: u16 = 0x0100;
    pub const MESSAGE_ID: u16 = 0x0110;
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
    pub const MOVE_DESTINATION: u16 = 0x0600;
    pub const PRIORITY: u16 = 0x0700;
    pub const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
    pub const STATUS: u16 = 0x0900;
    pub const OFFENDING_ELEMENT: u16 = 0x0901;
    pub const ERROR_COMMENT: u16 = 0x0902;
    pub const ERROR_ID: u16 = 0x0903;
    pub const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
    pub const REQUESTED_SOP_INSTANCE_UID: u16 = 0x1001;
    pub const EVENT_TYPE_ID: u16 = 0x1002;
    pub const ACTION_TYPE_ID: u16 = 0x1008;
    pub const REMAINING_SUBOPERATIONS: u16 = 0x1020;
    pub const COMPLETED_SUBOPERATIONS: u16 = 0x1021;
    pub const FAILED_SUBOPERATIONS: u16 = 0x1022;
    pub const WARNING_SUBOPERATIONS: u16 = 0x1023;
    pub const MOVE_ORIGINATOR_AE_TITLE: u16 = 0x1030;
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;
}

/// Command Data Set Type value meaning "no data set".
pub const NO_DATA_SET: u16 = 0x0101;

/// A command element value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandValue {
    /// UI, AE and LO values, unpadded.
    Text(String),
    U16(u16),
    U32(u32),
    /// AT values.
    Tags(Vec<u32>),
    /// Anything we do not interpret, kept raw.
    Raw(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command element (0000,{element:04X}) is in group {group:04X}, not 0000")]
    WrongGroup { group: u16, element: u16 },
    #[error("command set has no Command Field (0000,0100)")]
    MissingCommandField,
    #[error("command set has no {0}")]
    Missing(&'static str),
}

/// A parsed or to-be-sent command set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    elements: BTreeMap<u16, CommandValue>,
}

enum Kind {
    Text,
    U16,
    U32,
    Tags,
}

fn kind_of(element: u16) -> Kind {
    use tag::*;
    match element {
        GROUP_LENGTH => Kind::U32,
        AFFECTED_SOP_CLASS_UID
        | REQUESTED_SOP_CLASS_UID
        | MOVE_DESTINATION
        | ERROR_COMMENT
        | AFFECTED_SOP_INSTANCE_UID
        | REQUESTED_SOP_INSTANCE_UID
        | MOVE_ORIGINATOR_AE_TITLE => Kind::Text,
        OFFENDING_ELEMENT | 0x1005 => Kind::Tags,
        _ => Kind::U16,
    }
}

fn pad_byte(element: u16) -> u8 {
    match element {
        tag::AFFECTED_SOP_CLASS_UID
        | tag::REQUESTED_SOP_CLASS_UID
        | tag::AFFECTED_SOP_INSTANCE_UID
        | tag::REQUESTED_SOP_INSTANCE_UID => 0,
        _ => b' ',
    }
}

impl Command {
    pub fn new(command_field: u16) -> Command {
        let mut command = Command::default();
        command.set_u16(tag::COMMAND_FIELD, command_field);
        command.set_u16(tag::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        command
    }

    /// A response to `request`: same message id and affected SOP class.
    pub fn response_to(request: &Command, command_field: u16, status: u16) -> Command {
        let mut response = Command::new(command_field);
        if let Some(id) = request.message_id() {
            response.set_u16(tag::MESSAGE_ID_BEING_RESPONDED_TO, id);
        }
        let class = request.text(tag::AFFECTED_SOP_CLASS_UID).or_else(|| request.text(tag::REQUESTED_SOP_CLASS_UID));
        if let Some(class) = class {
            response.set_text(tag::AFFECTED_SOP_CLASS_UID, class);
        }
        response.set_u16(tag::STATUS, status);
        response
    }

    pub fn set_text(&mut self, element: u16, value: impl Into<String>) -> &mut Self {
        self.elements.insert(element, CommandValue::Text(value.into()));
        self
    }

    pub fn set_u16(&mut self, element: u16, value: u16) -> &mut Self {
        self.elements.insert(element, CommandValue::U16(value));
        self
    }

    pub fn set_tags(&mut self, element: u16, value: Vec<u32>) -> &mut Self {
        self.elements.insert(element, CommandValue::Tags(value));
        self
    }

    pub fn remove(&mut self, element: u16) {
        self.elements.remove(&element);
    }

    pub fn text(&self, element: u16) -> Option<&str> {
        match self.elements.get(&element) {
            Some(CommandValue::Text(text)) if !text.is_empty() => Some(text),
            _ => None,
        }
    }

    pub fn u16(&self, element: u16) -> Option<u16> {
        match self.elements.get(&element) {
            Some(CommandValue::U16(value)) => Some(*value),
            _ => None,
        }
    }

    pub fn command_field(&self) -> Option<u16> {
        self.u16(tag::COMMAND_FIELD)
    }

    pub fn message_id(&self) -> Option<u16> {
        self.u16(tag::MESSAGE_ID)
    }

    pub fn status(&self) -> Option<u16> {
        self.u16(tag::STATUS)
    }

    pub fn has_data_set(&self) -> bool {
        self.u16(tag::COMMAND_DATA_SET_TYPE).is_some_and(|kind| kind != NO_DATA_SET)
    }

    pub fn set_has_data_set(&mut self, has: bool) -> &mut Self {
        // Any value but 0101H means "data set present"; 0000H is the usual one.
        self.set_u16(tag::COMMAND_DATA_SET_TYPE, if has { 0x0000 } else { NO_DATA_SET })
    }

    /// Sub-operation counters of C-MOVE/C-GET responses.
    pub fn set_suboperations(
        &mut self,
        remaining: Option<u16>,
        completed: u16,
        failed: u16,
        warning: u16,
    ) -> &mut Self {
        match remaining {
            Some(remaining) => {
                self.set_u16(tag::REMAINING_SUBOPERATIONS, remaining);
            }
            None => self.remove(tag::REMAINING_SUBOPERATIONS),
        }
        self.set_u16(tag::COMPLETED_SUBOPERATIONS, completed);
        self.set_u16(tag::FAILED_SUBOPERATIONS, failed);
        self.set_u16(tag::WARNING_SUBOPERATIONS, warning)
    }

    /// Encode in Implicit VR Little Endian with a leading group length.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        for (&element, value) in &self.elements {
            if element == tag::GROUP_LENGTH {
                continue;
            }
            let mut bytes = match value {
                CommandValue::Text(text) => text.as_bytes().to_vec(),
                CommandValue::U16(v) => v.to_le_bytes().to_vec(),
                CommandValue::U32(v) => v.to_le_bytes().to_vec(),
                CommandValue::Tags(tags) => tags
                    .iter()
                    .flat_map(|t| {
                        let mut b = ((t >> 16) as u16).to_le_bytes().to_vec();
                        b.extend_from_slice(&((t & 0xFFFF) as u16).to_le_bytes());
                        b
                    })
                    .collect(),
                CommandValue::Raw(raw) => raw.clone(),
            };
            if bytes.len() % 2 == 1 {
                bytes.push(pad_byte(element));
            }
            body.extend_from_slice(&0u16.to_le_bytes());
            body.extend_from_slice(&element.to_le_bytes());
            body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            body.extend_from_slice(&bytes);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decode a command set; never panics on malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut command = Command::default();
        let mut position = 0usize;
        while position < bytes.len() {
            let header = bytes.get(position..position + 8).ok_or(CommandError::Truncated(position))?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if group != 0x0000 {
                return Err(CommandError::WrongGroup { group, element });
            }
            let start = position + 8;
            let end = start.checked_add(length).ok_or(CommandError::Truncated(position))?;
            let raw = bytes.get(start..end).ok_or(CommandError::Truncated(position))?;
            let value = match kind_of(element) {
                Kind::Text => CommandValue::Text(
                    String::from_utf8_lossy(raw).trim_end_matches(['\0', ' ']).trim_start().to_string(),
                ),
                Kind::U16 if raw.len() >= 2 => CommandValue::U16(u16::from_le_bytes([raw[0], raw[1]])),
                Kind::U32 if raw.len() >= 4 => CommandValue::U32(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]])),
                Kind::Tags => CommandValue::Tags(
                    raw.chunks_exact(4)
                        .map(|c| {
                            (u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)
                                | u32::from(u16::from_le_bytes([c[2], c[3]]))
                        })
                        .collect(),
                ),
                _ => CommandValue::Raw(raw.to_vec()),
            };
            command.elements.insert(element, value);
            position = end;
        }
        if command.command_field().is_none() {
            return Err(CommandError::MissingCommandField);
        }
        Ok(command)
    }
}

/// A short name for logs.
pub fn command_name(command_field: u16) -> &'static str {
    match command_field {
        field::C_STORE_RQ => "C-STORE-RQ",
        field::C_STORE_RSP => "C-STORE-RSP",
        field::C_GET_RQ => "C-GET-RQ",
        field::C_GET_RSP => "C-GET-RSP",
        field::C_FIND_RQ => "C-FIND-RQ",
        field::C_FIND_RSP => "C-FIND-RSP",
        field::C_MOVE_RQ => "C-MOVE-RQ",
        field::C_MOVE_RSP => "C-MOVE-RSP",
        field::C_ECHO_RQ => "C-ECHO-RQ",
        field::C_ECHO_RSP => "C-ECHO-RSP",
        field::N_EVENT_REPORT_RQ => "N-EVENT-REPORT-RQ",
        field::N_EVENT_REPORT_RSP => "N-EVENT-REPORT-RSP",
        field::N_ACTION_RQ => "N-ACTION-RQ",
        field::N_ACTION_RSP => "N-ACTION-RSP",
        field::C_CANCEL_RQ => "C-CANCEL-RQ",
        _ => "unknown command",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut command = Command::new(field::C_STORE_RQ);
        command
            .set_u16(tag::MESSAGE_ID, 7)
            .set_text(tag::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2")
            .set_text(tag::AFFECTED_SOP_INSTANCE_UID, "1.2.3")
            .set_u16(tag::PRIORITY, 0)
            .set_has_data_set(true);
        let bytes = command.encode();
        assert_eq!(bytes.len() % 2, 0);
        let decoded = Command::decode(&bytes).expect("decodes");
        assert_eq!(decoded.command_field(), Some(field::C_STORE_RQ));
        assert_eq!(decoded.message_id(), Some(7));
        assert_eq!(decoded.text(tag::AFFECTED_SOP_INSTANCE_UID), Some("1.2.3"));
        assert!(decoded.has_data_set());
        // The group length covers exactly the elements that follow it.
        let group_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(group_length, bytes.len() - 12);
    }

    #[test]
    fn response_echoes_message_id_and_class() {
        let mut request = Command::new(field::C_ECHO_RQ);
        request.set_u16(tag::MESSAGE_ID, 42).set_text(tag::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1");
        let response = Command::response_to(&request, field::C_ECHO_RSP, status::SUCCESS);
        assert_eq!(response.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO), Some(42));
        assert_eq!(response.text(tag::AFFECTED_SOP_CLASS_UID), Some("1.2.840.10008.1.1"));
        assert!(!response.has_data_set());
    }

    #[test]
    fn malformed_command_sets_are_errors_not_panics() {
        assert_eq!(Command::decode(&[0, 0, 0, 1]), Err(CommandError::Truncated(0)));
        assert!(matches!(Command::decode(&[8, 0, 0, 1, 2, 0, 0, 0, 1, 2]), Err(CommandError::WrongGroup { .. })));
        assert!(Command::decode(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert_eq!(Command::decode(&[]), Err(CommandError::MissingCommandField));
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        for len in 0..500usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = Command::decode(&bytes);
        }
    }
}
