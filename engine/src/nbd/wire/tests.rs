use super::*;

#[test]
fn errors_round_trip_and_unknown_values_read_as_einval() {
    for value in [1, 5, 12, 22, 28, 75, 95, 108] {
        assert_eq!(NbdError::from_wire(value).to_wire(), value);
    }
    assert_eq!(NbdError::from_wire(4242), NbdError::Invalid);
    assert_eq!(NbdError::from_wire(0), NbdError::Invalid);
}

#[test]
fn codes_round_trip() {
    for value in 0..12 {
        assert_eq!(OptionCode::from_wire(value).to_wire(), value);
        assert_eq!(CommandType::from_wire(value as u16).to_wire(), value as u16);
    }
    for value in [1, 2, 3, 4, REP_ERR + 1, REP_ERR + 9, REP_ERR + 77, 99] {
        assert_eq!(OptionReply::from_wire(value).to_wire(), value);
    }
    assert!(OptionReply::ErrUnsup.is_error());
    assert!(!OptionReply::Ack.is_error());
}

#[test]
fn request_header_round_trips_and_checks_its_magic() {
    let header = RequestHeader {
        flags: CMD_FLAG_FUA,
        command: CommandType::Write,
        handle: 0x0102_0304_0506_0708,
        offset: 1 << 40,
        length: 4096,
    };
    let mut bytes = header.encode();
    assert_eq!(RequestHeader::decode(&bytes), Some(header));
    bytes[0] ^= 1;
    assert_eq!(RequestHeader::decode(&bytes), None);
}

#[test]
fn chunk_header_decodes_every_field() {
    let chunk = encode_chunk(
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        0xdead_beef_cafe_f00d,
        &[&[0; 12]],
    );
    let header = ChunkHeader::decode_after_magic(chunk[4..20].try_into().unwrap());
    assert_eq!(
        header,
        ChunkHeader {
            flags: 1,
            reply_type: 5,
            handle: 0xdead_beef_cafe_f00d,
            length: 12
        }
    );
}

#[test]
fn cursor_fails_past_the_end_and_on_long_strings() {
    let mut c = Cursor::new(&[0, 0, 0, 9, b'a']);
    assert_eq!(c.string32(), None);
    let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.string32(), None);
    assert_eq!(Cursor::new(&[1]).u16(), None);
}
