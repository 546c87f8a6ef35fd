//! RecordIO, the framing of Mesos event streams: each record is its length in bytes as
//! decimal ASCII, a `\n`, then the record (`<len>\n<json>`).
//!
//! Shared by the master (scheduler API) and the agent (executor API), which only encode; the
//! [`Decoder`] exists for clients and tests and is bounded: a
//! length prefix longer than 20 digits or a record larger than the limit is an error, never
//! an allocation.

/// Why a byte stream is not valid RecordIO.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordIoError {
    #[error("record length prefix is not a decimal number followed by a newline")]
    BadLength,
    #[error("record of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
}

/// Frames one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 12);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

/// Incremental decoder: feed bytes as they arrive, get whole records.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_record: usize,
}

/// Longest accepted length prefix (u64::MAX has 20 digits).
const MAX_DIGITS: usize = 20;

impl Decoder {
    pub fn new(max_record: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max_record,
        }
    }

    /// Appends `bytes` and returns every record now complete. After an error the decoder is
    /// unusable (the stream is out of sync).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordIoError> {
        self.buf.extend_from_slice(bytes);
        let mut records = Vec::new();
        loop {
            let Some(nl) = self
                .buf
                .iter()
                .take(MAX_DIGITS + 1)
                .position(|b| *b == b'\n')
            else {
                if self.buf.len() > MAX_DIGITS || !self.buf.iter().all(u8::is_ascii_digit) {
                    return Err(RecordIoError::BadLength);
                }
                return Ok(records);
            };
            let digits = &self.buf[..nl];
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(RecordIoError::BadLength);
            }
            let len: u64 = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(RecordIoError::BadLength)?;
            if len > self.max_record as u64 {
                return Err(RecordIoError::TooLarge {
                    len,
                    max: self.max_record,
                });
            }
            let len = len as usize;
            if self.buf.len() < nl + 1 + len {
                return Ok(records);
            }
            let record = self.buf[nl + 1..nl + 1 + len].to_vec();
            self.buf.drain(..nl + 1 + len);
            records.push(record);
        }
    }

    /// Bytes received but not yet part of a complete record.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_like_the_mesos_docs() {
        assert_eq!(
            encode(b"{\"type\":\"HEARTBEAT\"}"),
            b"20\n{\"type\":\"HEARTBEAT\"}"
        );
        let mut d = Decoder::new(1024);
        assert_eq!(d.feed(b"2").expect("partial"), Vec::<Vec<u8>>::new());
        assert_eq!(
            d.feed(b"\n{}3\n[1]").expect("two"),
            vec![b"{}".to_vec(), b"[1]".to_vec()]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn bad_framing_is_an_error() {
        for (input, err) in [
            (&b"x\n"[..], RecordIoError::BadLength),
            (b"\n", RecordIoError::BadLength),
            (b"123456789012345678901234", RecordIoError::BadLength),
            (b"99999999999999999999\n", RecordIoError::BadLength),
            (
                b"18446744073709551615\n",
                RecordIoError::TooLarge {
                    len: u64::MAX,
                    max: 16,
                },
            ),
            (b"17\n", RecordIoError::TooLarge { len: 17, max: 16 }),
        ] {
            let mut d = Decoder::new(16);
            assert_eq!(d.feed(input), Err(err), "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn roundtrip_any_records_any_split(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
                                           split in 1usize..17) {
            let mut wire = Vec::new();
            for r in &records {
                wire.extend(encode(r));
            }
            let mut d = Decoder::new(64);
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                got.extend(d.feed(chunk).expect("valid stream"));
            }
            prop_assert_eq!(got, records);
            prop_assert_eq!(d.pending(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_buffer_unbounded(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut d = Decoder::new(32);
            if d.feed(&bytes).is_ok() {
                prop_assert!(d.pending() <= 32 + MAX_DIGITS + 1);
            }
        }
    }
}
