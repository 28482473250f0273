//! Requests: each command is checked against the export and the options the server
//! offered before anything is queued, and is accounted in flight before its bytes can
//! leave, so a reply always finds its request. A refused command changes nothing.

use super::{ClientError, ClientSession, InFlight, Pending, Phase};
use crate::nbd::command::Command;
use crate::nbd::export::ExportInfo;
use crate::nbd::wire::*;

/// A request as the checks before sending see it.
#[derive(Debug, Clone, Copy)]
struct Shape {
    offset: u64,
    length: u64,
    fua: bool,
    /// The command or flag the server must have offered, when it did not.
    needs: Option<&'static str>,
    writes: bool,
    /// A read or write: bounded by the maximum payload.
    payload: bool,
    /// `NBD_CMD_FLUSH`: no range.
    flush: bool,
}

impl ClientSession {
    /// Queues a request and returns its handle. Refused (nothing sent) unless ready and
    /// unless the command fits the export: range, alignment, payload size, read-only, and
    /// the commands and flags the server offered. A write's header and payload are queued
    /// as one output chunk (a copy of the payload; [`send_write_header`] avoids it).
    ///
    /// [`send_write_header`]: Self::send_write_header
    pub fn send(&mut self, command: Command) -> Result<u64, ClientError> {
        let info = self.ready_info()?;
        Self::check(info, &self.shape(info, &command))?;
        let (offset, length) = command.range();
        let length32 = u32::try_from(length).expect("checked against the maximum payload");
        let (kind, flags, pending) = match &command {
            Command::Read { offset, length } => (
                CommandType::Read,
                0,
                Pending::Read {
                    offset: *offset,
                    length: *length,
                    data: Vec::new(),
                    covered: 0,
                },
            ),
            Command::Write { fua, .. } => (CommandType::Write, fua_flag(*fua), Pending::Other),
            Command::Flush => (CommandType::Flush, 0, Pending::Other),
            Command::Trim { fua, .. } => (CommandType::Trim, fua_flag(*fua), Pending::Other),
            Command::WriteZeroes {
                fua,
                no_hole,
                fast_zero,
                ..
            } => {
                let mut flags = fua_flag(*fua);
                if *no_hole {
                    flags |= CMD_FLAG_NO_HOLE;
                }
                if *fast_zero {
                    flags |= CMD_FLAG_FAST_ZERO;
                }
                (CommandType::WriteZeroes, flags, Pending::Other)
            }
            Command::BlockStatus {
                length, req_one, ..
            } => (
                CommandType::BlockStatus,
                if *req_one { CMD_FLAG_REQ_ONE } else { 0 },
                Pending::BlockStatus {
                    length: *length,
                    req_one: *req_one,
                    extents: None,
                },
            ),
        };
        let header = RequestHeader {
            flags,
            command: kind,
            handle: 0,
            offset,
            length: length32,
        };
        let (handle, header) = self.register(header, pending);
        let mut bytes = header.to_vec();
        if let Command::Write { data, .. } = command {
            bytes.extend_from_slice(&data);
        }
        self.output.push_back(bytes);
        Ok(handle)
    }

    /// Accounts an `NBD_CMD_WRITE` of `length` bytes at `offset` as in flight and returns
    /// its handle and its request header, leaving the payload with the caller: no copy of
    /// it is made. Refused (nothing accounted) under the same checks as [`send`].
    ///
    /// The driver must write the returned header, then exactly `length` payload bytes,
    /// right after every chunk already taken from [`poll_output`] and before any later
    /// one, with nothing in between: the header announces the payload, so a stream
    /// without it is out of step for good (a driver that cannot write the payload must
    /// close the connection).
    ///
    /// [`send`]: Self::send
    /// [`poll_output`]: Self::poll_output
    pub fn send_write_header(
        &mut self,
        offset: u64,
        length: usize,
        fua: bool,
    ) -> Result<(u64, [u8; REQUEST_HEADER_LEN]), ClientError> {
        let info = self.ready_info()?;
        let write = Shape {
            offset,
            length: length as u64,
            fua,
            needs: None,
            writes: true,
            payload: true,
            flush: false,
        };
        Self::check(info, &write)?;
        let header = RequestHeader {
            flags: fua_flag(fua),
            command: CommandType::Write,
            handle: 0,
            offset,
            length: u32::try_from(length).expect("checked against the maximum payload"),
        };
        Ok(self.register(header, Pending::Other))
    }

    /// The export when requests may be sent, else why not.
    fn ready_info(&self) -> Result<&ExportInfo, ClientError> {
        match self.phase {
            Phase::Ready => Ok(self
                .info
                .as_ref()
                .expect("ready implies the export is known")),
            Phase::Disconnected | Phase::Failed => Err(ClientError::Closed),
            _ => Err(ClientError::NotReady),
        }
    }

    /// Gives a checked request the next handle and accounts it in flight, before any of
    /// its bytes can leave: a reply, however quick, always finds its request.
    fn register(
        &mut self,
        mut header: RequestHeader,
        pending: Pending,
    ) -> (u64, [u8; REQUEST_HEADER_LEN]) {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        header.handle = handle;
        self.in_flight.insert(
            handle,
            InFlight {
                pending,
                error: None,
            },
        );
        (handle, header.encode())
    }

    /// Ends the session: `NBD_CMD_DISC` once ready (replies in flight still arrive);
    /// during the handshake, nothing more is sent. Later `send`s fail with `Closed`.
    pub fn disconnect(&mut self) {
        if self.phase == Phase::Ready {
            let header = RequestHeader {
                flags: 0,
                command: CommandType::Disc,
                handle: 0,
                offset: 0,
                length: 0,
            };
            self.output.push_back(header.encode().to_vec());
        }
        if self.phase != Phase::Failed {
            self.phase = Phase::Disconnected;
        }
    }

    /// What `check` needs to know of `command`.
    fn shape(&self, info: &ExportInfo, command: &Command) -> Shape {
        let (offset, length) = command.range();
        let (fua, needs) = match command {
            Command::Read { .. } => (false, None),
            Command::Write { fua, .. } => (*fua, None),
            Command::Flush => (false, (!info.can_flush).then_some("NBD_CMD_FLUSH")),
            Command::Trim { fua, .. } => (*fua, (!info.can_trim).then_some("NBD_CMD_TRIM")),
            Command::WriteZeroes { fua, fast_zero, .. } => (
                *fua,
                if !info.can_write_zeroes {
                    Some("NBD_CMD_WRITE_ZEROES")
                } else if *fast_zero && !info.can_fast_zero {
                    Some("NBD_CMD_FLAG_FAST_ZERO")
                } else {
                    None
                },
            ),
            Command::BlockStatus { .. } => (
                false,
                (!self.can_block_status()).then_some("NBD_CMD_BLOCK_STATUS"),
            ),
        };
        Shape {
            offset,
            length,
            fua,
            needs,
            writes: command.writes(),
            payload: matches!(command, Command::Read { .. } | Command::Write { .. }),
            flush: matches!(command, Command::Flush),
        }
    }

    fn check(info: &ExportInfo, request: &Shape) -> Result<(), ClientError> {
        let &Shape {
            offset,
            length,
            fua,
            needs,
            writes,
            payload,
            flush,
        } = request;
        if let Some(what) = needs {
            return Err(ClientError::Unsupported(what));
        }
        if fua && !info.can_fua {
            return Err(ClientError::Unsupported("NBD_CMD_FLAG_FUA"));
        }
        if writes && info.read_only {
            return Err(ClientError::ReadOnly);
        }
        if flush {
            return Ok(());
        }
        if length == 0 {
            return Err(ClientError::ZeroLength);
        }
        let maximum = info.block_size.maximum;
        if payload && length > u64::from(maximum) {
            return Err(ClientError::TooLong { length, maximum });
        }
        if length > u64::from(u32::MAX) {
            return Err(ClientError::TooLong {
                length,
                maximum: u32::MAX,
            });
        }
        let minimum = info.block_size.minimum;
        if offset % u64::from(minimum) != 0 || length % u64::from(minimum) != 0 {
            return Err(ClientError::Misaligned {
                offset,
                length,
                minimum,
            });
        }
        if offset.checked_add(length).is_none_or(|end| end > info.size) {
            return Err(ClientError::OutOfRange {
                offset,
                length,
                size: info.size,
            });
        }
        Ok(())
    }
}

fn fua_flag(fua: bool) -> u16 {
    if fua {
        CMD_FLAG_FUA
    } else {
        0
    }
}
