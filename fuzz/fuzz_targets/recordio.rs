//! RecordIO framing (`brim_proto::recordio::Decoder`) fed the input in chunks whose split
//! points come from the input itself: never a panic, never more buffered than one record,
//! and the records must be the same whatever the chunking.
#![no_main]

use brim_proto::recordio::{encode, Decoder};
use libfuzzer_sys::fuzz_target;

const MAX_RECORD: usize = 64;
/// Length prefix (at most 20 digits) + newline + one record.
const MAX_PENDING: usize = 20 + 1 + MAX_RECORD;

fuzz_target!(|data: &[u8]| {
    let (splits, stream) = data.split_at(data.len().min(8));
    let mut chunked = Decoder::new(MAX_RECORD);
    let mut got = Vec::new();
    let mut failed = false;
    let mut rest = stream;
    for s in splits.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*s) % 16 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        match chunked.feed(chunk) {
            Ok(records) => {
                assert!(
                    chunked.pending() <= MAX_PENDING,
                    "decoder buffered {} bytes",
                    chunked.pending()
                );
                for r in &records {
                    assert!(r.len() <= MAX_RECORD);
                }
                got.extend(records);
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    // Whole-input decoding agrees with chunked decoding on success.
    let mut whole = Decoder::new(MAX_RECORD);
    match whole.feed(stream) {
        Ok(records) if !failed => {
            assert_eq!(records, got);
            assert_eq!(whole.pending(), chunked.pending());
            // Re-encoding the records reproduces the consumed prefix of the stream.
            let wire: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
            let consumed = stream.len() - whole.pending();
            let mut again = Decoder::new(MAX_RECORD);
            assert_eq!(again.feed(&wire).ok(), Some(records));
            assert!(wire.len() <= consumed);
        }
        _ => {}
    }
});
