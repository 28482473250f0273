//! Option haggling: each option of the handshake is answered in turn, and the session
//! enters transmission only through `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME` on a known
//! export. Every `NBD_OPT_SET_META_CONTEXT` replaces the selection; `base:allocation` is
//! served only for the export it was selected for, with structured replies. The maximum
//! payload advertised never exceeds what the session accepts.

use super::{CloseReason, Phase, ServerEvent, ServerSession, BASE_ALLOCATION_ID};
use crate::nbd::export::ExportInfo;
use crate::nbd::wire::*;

impl ServerSession {
    pub(super) fn handle_option(&mut self, option: u32, data: &[u8]) {
        let reply = |reply: OptionReply, data: &[u8]| encode_option_reply(option, reply, data);
        match OptionCode::from_wire(option) {
            OptionCode::ExportName => {
                let name = String::from_utf8_lossy(data).into_owned();
                let Some(export) = self.find_export(&name).cloned() else {
                    self.close(CloseReason::UnknownExport(name));
                    return;
                };
                let mut out = Vec::with_capacity(10 + EXPORT_NAME_ZEROES);
                out.extend_from_slice(&export.size.to_be_bytes());
                out.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !self.no_zeroes {
                    out.resize(out.len() + EXPORT_NAME_ZEROES, 0);
                }
                self.push_output(out);
                self.enter_transmission(export);
            }
            OptionCode::Abort => {
                self.push_output(reply(OptionReply::Ack, &[]));
                self.close(CloseReason::ClientAborted);
            }
            OptionCode::List => {
                if !data.is_empty() {
                    return self.push_output(reply(
                        OptionReply::ErrInvalid,
                        b"NBD_OPT_LIST takes no data",
                    ));
                }
                let names: Vec<String> = self.exports.iter().map(|e| e.name.clone()).collect();
                for name in names {
                    let mut entry = Vec::new();
                    put_string32(&mut entry, &name);
                    self.push_output(reply(OptionReply::Server, &entry));
                }
                self.push_output(reply(OptionReply::Ack, &[]));
            }
            code @ (OptionCode::Info | OptionCode::Go) => {
                self.handle_info_or_go(option, code == OptionCode::Go, data)
            }
            OptionCode::StructuredReply => {
                if !data.is_empty() || self.structured {
                    return self.push_output(reply(
                        OptionReply::ErrInvalid,
                        b"structured replies: no data, once",
                    ));
                }
                self.structured = true;
                self.push_output(reply(OptionReply::Ack, &[]));
            }
            code @ (OptionCode::ListMetaContext | OptionCode::SetMetaContext) => {
                self.handle_meta_context(option, code == OptionCode::SetMetaContext, data)
            }
            OptionCode::StartTls | OptionCode::Other(_) => {
                self.push_output(reply(OptionReply::ErrUnsup, &[]))
            }
        }
    }

    fn handle_info_or_go(&mut self, option: u32, go: bool, data: &[u8]) {
        let parsed = (|| {
            let mut c = Cursor::new(data);
            let name = c.string32()?;
            let count = c.u16()?;
            let mut requests = Vec::new();
            for _ in 0..count {
                requests.push(c.u16()?);
            }
            (c.remaining() == 0).then_some((name, requests))
        })();
        let Some((name, requests)) = parsed else {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrInvalid,
                b"malformed request",
            ));
        };
        let Some(export) = self.find_export(&name).cloned() else {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrUnknown,
                b"no such export",
            ));
        };
        let mut info = Vec::with_capacity(12);
        info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        info.extend_from_slice(&export.size.to_be_bytes());
        info.extend_from_slice(&export.transmission_flags().to_be_bytes());
        self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        if requests.contains(&INFO_NAME) {
            let mut info = INFO_NAME.to_be_bytes().to_vec();
            info.extend_from_slice(export.name.as_bytes());
            self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        }
        if requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
            let mut info = INFO_DESCRIPTION.to_be_bytes().to_vec();
            let description =
                &export.description.as_bytes()[..export.description.len().min(MAX_STRING_LEN)];
            info.extend_from_slice(description);
            self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        }
        let block = export.block_size;
        let mut info = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        info.extend_from_slice(&block.minimum.to_be_bytes());
        info.extend_from_slice(&block.preferred.to_be_bytes());
        info.extend_from_slice(&self.max_payload(&export).to_be_bytes());
        self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        self.push_output(encode_option_reply(option, OptionReply::Ack, &[]));
        if go {
            self.enter_transmission(export);
        }
    }

    fn handle_meta_context(&mut self, option: u32, set: bool, data: &[u8]) {
        if set {
            // Every NBD_OPT_SET_META_CONTEXT replaces the selection, even when it fails.
            self.meta_context_export = None;
        }
        if !self.structured {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrInvalid,
                b"structured replies first",
            ));
        }
        let parsed = (|| {
            let mut c = Cursor::new(data);
            let name = c.string32()?;
            let count = c.u32()?;
            let mut queries = Vec::new();
            for _ in 0..count {
                queries.push(c.string32()?);
            }
            (c.remaining() == 0).then_some((name, queries))
        })();
        let Some((name, queries)) = parsed else {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrInvalid,
                b"malformed request",
            ));
        };
        if self.find_export(&name).is_none() {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrUnknown,
                b"no such export",
            ));
        }
        let matches = if set {
            queries.iter().any(|q| q == BASE_ALLOCATION)
        } else {
            queries.is_empty() || queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
        };
        if matches {
            let id = if set { BASE_ALLOCATION_ID } else { 0 };
            let mut context = id.to_be_bytes().to_vec();
            context.extend_from_slice(BASE_ALLOCATION.as_bytes());
            self.push_output(encode_option_reply(
                option,
                OptionReply::MetaContext,
                &context,
            ));
            if set {
                self.meta_context_export = Some(name);
            }
        }
        self.push_output(encode_option_reply(option, OptionReply::Ack, &[]));
    }

    fn find_export(&self, name: &str) -> Option<&ExportInfo> {
        self.exports.iter().find(|e| e.name == name)
    }

    /// The maximum payload advertised: the export's, but never more than the session
    /// accepts.
    pub(super) fn max_payload(&self, export: &ExportInfo) -> u32 {
        export.block_size.maximum.min(self.limits.max_payload)
    }

    fn enter_transmission(&mut self, export: ExportInfo) {
        self.base_allocation =
            self.structured && self.meta_context_export.as_deref() == Some(export.name.as_str());
        self.events.push_back(ServerEvent::ExportChosen {
            name: export.name.clone(),
        });
        self.export = Some(export);
        self.phase = Phase::Transmission;
    }
}
