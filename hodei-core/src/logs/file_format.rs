//! The on-disk record format of a job log: one append-only file per job.
//!
//! Each record is `seq: u64 LE | stream: u8 | emitted_at_us: i64 LE | len: u32 LE | bytes`.
//! A record cut short by a crash is ignored when read, so readers never see half a chunk.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};

use super::{OutputChunk, OutputStream};

pub(crate) const HEADER_LEN: usize = 8 + 1 + 8 + 4;
/// Largest chunk a job log stores or reads back; a longer record is refused as corrupt.
/// The worker's chunks stay far below it (see the worker's `MAX_MERGED_CHUNK_BYTES`).
pub const MAX_STORED_CHUNK_BYTES: usize = 4 << 20;

pub(crate) fn encode_into(chunk: &OutputChunk, out: &mut Vec<u8>) {
    out.extend_from_slice(&chunk.seq.to_le_bytes());
    out.push(chunk.stream.to_byte());
    out.extend_from_slice(&chunk.emitted_at_us.to_le_bytes());
    let len = u32::try_from(chunk.data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&chunk.data);
}

pub(crate) fn encoded_len(chunk: &OutputChunk) -> usize {
    HEADER_LEN + chunk.data.len()
}

/// Reads the next whole record, or `None` at a clean or torn end of file.
pub(crate) fn read_record(reader: &mut impl Read) -> io::Result<Option<OutputChunk>> {
    let mut header = [0u8; HEADER_LEN];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let seq = u64::from_le_bytes(header[0..8].try_into().map_err(invalid)?);
    let stream = OutputStream::from_byte(header[8]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "log record has an unknown stream",
        )
    })?;
    let emitted_at_us = i64::from_le_bytes(header[9..17].try_into().map_err(invalid)?);
    let len = u32::from_le_bytes(header[17..21].try_into().map_err(invalid)?) as usize;
    if len > MAX_STORED_CHUNK_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "log record is too large",
        ));
    }
    let mut data = BytesMut::zeroed(len);
    if !read_full(reader, &mut data)? {
        return Ok(None);
    }
    Ok(Some(OutputChunk {
        seq,
        stream,
        data: Bytes::from(data),
        emitted_at_us,
    }))
}

fn invalid(err: std::array::TryFromSliceError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Fills `buf`; false if the input ended first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, data: &'static [u8]) -> OutputChunk {
        OutputChunk {
            seq,
            stream: OutputStream::Stderr,
            data: Bytes::from_static(data),
            emitted_at_us: 42,
        }
    }

    #[test]
    fn records_round_trip_including_non_utf8() {
        let mut buf = Vec::new();
        encode_into(&chunk(1, b"hello\n"), &mut buf);
        encode_into(&chunk(2, b"\xff\xfe\x00raw"), &mut buf);
        let mut reader = buf.as_slice();
        assert_eq!(
            read_record(&mut reader).unwrap(),
            Some(chunk(1, b"hello\n"))
        );
        assert_eq!(
            read_record(&mut reader).unwrap(),
            Some(chunk(2, b"\xff\xfe\x00raw"))
        );
        assert_eq!(read_record(&mut reader).unwrap(), None);
    }

    #[test]
    fn a_torn_record_is_not_returned() {
        let mut buf = Vec::new();
        encode_into(&chunk(1, b"complete"), &mut buf);
        encode_into(&chunk(2, b"torn record"), &mut buf);
        buf.truncate(buf.len() - 3);
        let mut reader = buf.as_slice();
        assert!(read_record(&mut reader).unwrap().is_some());
        assert_eq!(read_record(&mut reader).unwrap(), None);
    }
}
