//! The transmission phase's requests: each one is checked against the chosen export
//! (command and flags offered, read-only, length, alignment, range) before the driver
//! sees it. A valid request is accounted in flight and becomes an event; an invalid one
//! is answered here with the error the protocol names and never reaches the driver.

use super::{CloseReason, Expect, InFlight, Phase, ServerEvent, ServerSession};
use crate::nbd::command::{Command, Request};
use crate::nbd::wire::*;

impl ServerSession {
    /// Checks a request against the export; valid requests become events, invalid ones are
    /// answered with the error the protocol names.
    pub(super) fn handle_request(&mut self, header: RequestHeader, data: Vec<u8>) {
        let handle = header.handle;
        if header.command == CommandType::Disc {
            self.phase = Phase::Disconnecting;
            if self.in_flight.is_empty() {
                self.close(CloseReason::ClientDisconnected);
            }
            return;
        }
        if self.in_flight.contains_key(&handle) {
            self.close(CloseReason::DuplicateHandle(handle));
            return;
        }
        match self.check_request(&header, data) {
            Ok((command, expect)) => {
                let bytes = match &command {
                    Command::Write { data, .. } => data.len(),
                    Command::Read { length, .. } => *length as usize,
                    _ => 0,
                };
                self.in_flight.insert(handle, InFlight { expect, bytes });
                self.in_flight_bytes += bytes;
                self.events
                    .push_back(ServerEvent::Request(Request { handle, command }));
            }
            Err(error) => self.reply_error(handle, error),
        }
    }

    fn check_request(
        &self,
        header: &RequestHeader,
        data: Vec<u8>,
    ) -> Result<(Command, Expect), NbdError> {
        let export = self
            .export
            .as_ref()
            .expect("requests are parsed only in transmission, after an export was chosen");
        let RequestHeader {
            flags,
            command,
            offset,
            length,
            ..
        } = *header;
        let fua_flag = if export.can_fua { CMD_FLAG_FUA } else { 0 };
        let (allowed, supported) = match command {
            CommandType::Read => (fua_flag, true),
            CommandType::Write => (fua_flag, true),
            CommandType::Flush => (fua_flag, export.can_flush),
            CommandType::Trim => (fua_flag, export.can_trim),
            CommandType::WriteZeroes => {
                let fast = if export.can_fast_zero {
                    CMD_FLAG_FAST_ZERO
                } else {
                    0
                };
                (fua_flag | CMD_FLAG_NO_HOLE | fast, export.can_write_zeroes)
            }
            CommandType::BlockStatus => (fua_flag | CMD_FLAG_REQ_ONE, self.base_allocation),
            CommandType::Disc | CommandType::Cache | CommandType::Other(_) => {
                return Err(NbdError::Invalid)
            }
        };
        if !supported || flags & !allowed != 0 {
            return Err(NbdError::Invalid);
        }
        let writes = matches!(
            command,
            CommandType::Write | CommandType::Trim | CommandType::WriteZeroes
        );
        if writes && export.read_only {
            return Err(NbdError::Perm);
        }
        if command != CommandType::Flush {
            if length == 0 {
                return Err(NbdError::Invalid);
            }
            if command == CommandType::Read && length > self.max_payload(export) {
                return Err(if self.structured {
                    NbdError::Overflow
                } else {
                    NbdError::Invalid
                });
            }
            let minimum = u64::from(export.block_size.minimum.max(1));
            if offset % minimum != 0 || u64::from(length) % minimum != 0 {
                return Err(NbdError::Invalid);
            }
            if offset
                .checked_add(u64::from(length))
                .is_none_or(|end| end > export.size)
            {
                let past_end_writes =
                    matches!(command, CommandType::Write | CommandType::WriteZeroes);
                return Err(if past_end_writes {
                    NbdError::NoSpace
                } else {
                    NbdError::Invalid
                });
            }
        }
        let fua = flags & CMD_FLAG_FUA != 0;
        Ok(match command {
            CommandType::Read => (
                Command::Read { offset, length },
                Expect::Data { offset, length },
            ),
            CommandType::Write => (Command::Write { offset, data, fua }, Expect::Nothing),
            CommandType::Flush => (Command::Flush, Expect::Nothing),
            CommandType::Trim => (
                Command::Trim {
                    offset,
                    length,
                    fua,
                },
                Expect::Nothing,
            ),
            CommandType::WriteZeroes => (
                Command::WriteZeroes {
                    offset,
                    length,
                    fua,
                    no_hole: flags & CMD_FLAG_NO_HOLE != 0,
                    fast_zero: flags & CMD_FLAG_FAST_ZERO != 0,
                },
                Expect::Nothing,
            ),
            CommandType::BlockStatus => {
                let req_one = flags & CMD_FLAG_REQ_ONE != 0;
                (
                    Command::BlockStatus {
                        offset,
                        length,
                        req_one,
                    },
                    Expect::Extents { length, req_one },
                )
            }
            CommandType::Disc | CommandType::Cache | CommandType::Other(_) => {
                unreachable!("refused by the flag check above")
            }
        })
    }
}
