//! Option negotiation: `NBD_OPT_STRUCTURED_REPLY` and `NBD_OPT_SET_META_CONTEXT` when
//! asked for, then `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME` when the server does not know
//! it). A refused optional option is dropped; a refused `NBD_OPT_GO` fails the session.
//! The export becomes ready exactly once, with its maximum payload capped at
//! [`MAX_CLIENT_PAYLOAD`] and kept a multiple of its alignment.

use super::{ClientError, ClientEvent, ClientSession, Phase, MAX_CLIENT_PAYLOAD};
use crate::nbd::export::{BlockSize, ExportInfo};
use crate::nbd::wire::*;

impl ClientSession {
    pub(super) fn send_go(&mut self) {
        let mut data = Vec::new();
        put_string32(&mut data, &self.export_name);
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
        self.output.push_back(encode_option(OptionCode::Go, &data));
        self.info = None;
        self.phase = Phase::Go;
    }

    pub(super) fn option_reply(&mut self, option: u32, reply: OptionReply, data: &[u8]) {
        let expected = match self.phase {
            Phase::StructuredReply => OptionCode::StructuredReply,
            Phase::SetMetaContext => OptionCode::SetMetaContext,
            _ => OptionCode::Go,
        };
        if option != expected.to_wire() {
            return self.protocol(format!(
                "reply to option {option} while waiting for {}",
                expected.to_wire()
            ));
        }
        if reply == OptionReply::ErrShutdown {
            return self.fail(ClientError::ServerShutdown);
        }
        match (self.phase, reply) {
            (Phase::StructuredReply, OptionReply::Ack) => {
                self.structured = true;
                self.after_structured();
            }
            (Phase::StructuredReply, r) if r.is_error() => self.after_structured(),
            (Phase::SetMetaContext, OptionReply::MetaContext) => {
                let mut c = Cursor::new(data);
                let Some(id) = c.u32() else {
                    return self.protocol("short NBD_REP_META_CONTEXT");
                };
                if c.rest() == BASE_ALLOCATION.as_bytes() {
                    self.context_id = Some(id);
                }
            }
            (Phase::SetMetaContext, OptionReply::Ack) => self.send_go(),
            (Phase::SetMetaContext, r) if r.is_error() => {
                self.context_id = None;
                self.send_go();
            }
            (Phase::Go, OptionReply::Info) => self.go_info(data),
            (Phase::Go, OptionReply::Ack) => match self.info.take() {
                Some(info) => self.become_ready(info),
                None => self.protocol("NBD_OPT_GO succeeded without NBD_INFO_EXPORT"),
            },
            (Phase::Go, OptionReply::ErrUnsup) => {
                self.output.push_back(encode_option(
                    OptionCode::ExportName,
                    self.export_name.as_bytes(),
                ));
                self.phase = Phase::ExportName;
            }
            (Phase::Go, OptionReply::ErrUnknown) => {
                self.fail(ClientError::UnknownExport(self.export_name.clone()))
            }
            (Phase::Go, r) if r.is_error() => self.fail(ClientError::OptionRefused {
                option,
                reply: r.to_wire(),
                message: String::from_utf8_lossy(&data[..data.len().min(MAX_STRING_LEN)])
                    .into_owned(),
            }),
            (_, r) => self.protocol(format!("unexpected option reply {:#x}", r.to_wire())),
        }
    }

    fn after_structured(&mut self) {
        if self.structured && self.options.base_allocation {
            let mut data = Vec::new();
            put_string32(&mut data, &self.export_name);
            data.extend_from_slice(&1u32.to_be_bytes());
            put_string32(&mut data, BASE_ALLOCATION);
            self.output
                .push_back(encode_option(OptionCode::SetMetaContext, &data));
            self.phase = Phase::SetMetaContext;
        } else {
            self.send_go();
        }
    }

    fn go_info(&mut self, data: &[u8]) {
        let mut c = Cursor::new(data);
        let Some(kind) = c.u16() else {
            return self.protocol("short NBD_REP_INFO");
        };
        match kind {
            INFO_EXPORT => {
                let (Some(size), Some(flags), 0) = (c.u64(), c.u16(), c.remaining()) else {
                    return self.protocol("NBD_INFO_EXPORT of the wrong length");
                };
                let mut info = ExportInfo::from_flags(self.export_name.clone(), size, flags);
                if let Some(old) = self.info.take() {
                    info.block_size = old.block_size;
                    info.description = old.description;
                }
                self.info = Some(info);
            }
            INFO_BLOCK_SIZE => {
                let (Some(minimum), Some(preferred), Some(maximum), 0) =
                    (c.u32(), c.u32(), c.u32(), c.remaining())
                else {
                    return self.protocol("NBD_INFO_BLOCK_SIZE of the wrong length");
                };
                // Only what this client relies on is checked: alignment is a power of two
                // the protocol allows, and a maximum payload holds at least one block.
                if !minimum.is_power_of_two() || minimum > 1 << 16 || maximum < minimum {
                    return self.protocol(format!(
                        "invalid block sizes {minimum}/{preferred}/{maximum}"
                    ));
                }
                let info = self
                    .info
                    .get_or_insert_with(|| ExportInfo::from_flags("", 0, 0));
                info.block_size = BlockSize {
                    minimum,
                    preferred: preferred.max(minimum),
                    maximum,
                };
            }
            INFO_DESCRIPTION => {
                let text = String::from_utf8_lossy(c.rest()).into_owned();
                self.info
                    .get_or_insert_with(|| ExportInfo::from_flags("", 0, 0))
                    .description = text;
            }
            _ => {} // NBD_INFO_NAME and unknown types are ignored, as the protocol asks.
        }
    }

    pub(super) fn become_ready(&mut self, mut info: ExportInfo) {
        info.name = self.export_name.clone();
        let maximum = info.block_size.maximum.min(MAX_CLIENT_PAYLOAD);
        // Keep the cap a multiple of the alignment so split requests stay aligned.
        info.block_size.maximum = (maximum / info.block_size.minimum * info.block_size.minimum)
            .max(info.block_size.minimum);
        if !self.structured {
            self.context_id = None;
        }
        self.info = Some(info.clone());
        self.phase = Phase::Ready;
        self.events.push_back(ClientEvent::Ready(info));
    }
}
