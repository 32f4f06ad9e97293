//! The journal log's file format and files (see `sqlite_log.rs` for how the store uses them).
//!
//! An entry is one submission, whole: `len: u32 LE`, `crc: u32 LE` (CRC-32 of the body), then
//! the body: `seq: u64 LE`, `count: u32 LE` and the records. A record is a tag byte and its
//! fields in order: integers little-endian, text and bytes as `u32 LE` length + bytes, an
//! optional value as 0 (none) or 1 followed by the value, enums as their column spelling.
//! A torn or garbled tail (a crash in the middle of an append) ends the readable log there.
//!
//! Two files, `<db>.txlog-a` and `<db>.txlog-b`: entries are appended to the active one; once
//! it is large and every entry of the other one is durably in the tables, the other one is
//! emptied and becomes the active one. Replay reads both and orders by sequence number.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::model::{EventRow, Outcome, PanAtRest, Record, SafState, TxnKind, TxnRow, TxnState};

const HEADER: usize = 8;
/// An entry body larger than this is garbage, not a submission.
const BODY_MAX: usize = 16 << 20;
/// The active file is swapped for the other one past this size.
pub(crate) const ROTATE_BYTES: u64 = 64 << 20;

/// Whether every record of a submission can go through the log: the transaction journal, its
/// timeline and the reversal queue, the records of every authorisation. Everything else
/// (sign-ins, provisioning, settlement, cases, the web's records) is rare next to them and
/// commits into the tables directly, where a broken rule still fails the submission.
pub(crate) fn loggable(records: &[Record]) -> bool {
    records.iter().all(|r| {
        matches!(
            r,
            Record::InsertTxn(_)
                | Record::Outcome(_)
                | Record::State { .. }
                | Record::Refunded { .. }
                | Record::Event(_)
                | Record::SafEnqueue { .. }
                | Record::SafRetry { .. }
                | Record::SafDone { .. }
        )
    })
}

/// One submission as logged.
pub(crate) struct Entry {
    pub seq: u64,
    pub records: Vec<Record>,
}

// --- encoding

const CRC_TABLE: [u32; 256] = {
    let mut table = [0_u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        // In bounds: i < 256 (the lint cannot see it in a constant block).
        #[allow(clippy::indexing_slicing)]
        {
            table[i] = c;
        }
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, reflected), as zlib computes it.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0_u32;
    for &b in bytes {
        let index = usize::from((c as u8) ^ b);
        c = CRC_TABLE.get(index).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

fn too_large(what: &str) -> StoreError {
    StoreError::Constraint {
        message: format!("{what} too large for the journal log"),
    }
}

struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(v.len()).map_err(|_| too_large("a field"))?;
        self.u32(len);
        self.0.extend_from_slice(v);
        Ok(())
    }
    fn text(&mut self, v: &str) -> Result<(), StoreError> {
        self.bytes(v.as_bytes())
    }
    fn opt_text(&mut self, v: Option<&str>) -> Result<(), StoreError> {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.text(v)?;
            }
        }
        Ok(())
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
        }
    }
}

/// Appends one entry (header and body) to `buf`.
pub(crate) fn encode_entry(
    buf: &mut Vec<u8>,
    seq: u64,
    records: &[Record],
) -> Result<(), StoreError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    let written = encode_body(buf, seq, records);
    let body = buf.get(start + HEADER..).unwrap_or_default();
    let checked = written.and_then(|()| {
        if body.len() > BODY_MAX {
            return Err(too_large("a submission"));
        }
        Ok((u32::try_from(body.len()).unwrap_or(u32::MAX), crc32(body)))
    });
    match checked {
        Ok((len, crc)) => {
            let mut header = [0_u8; HEADER];
            let (l, c) = header.split_at_mut(4);
            l.copy_from_slice(&len.to_le_bytes());
            c.copy_from_slice(&crc.to_le_bytes());
            if let Some(slot) = buf.get_mut(start..start + HEADER) {
                slot.copy_from_slice(&header);
            }
            Ok(())
        }
        Err(error) => {
            buf.truncate(start);
            Err(error)
        }
    }
}

fn encode_body(buf: &mut Vec<u8>, seq: u64, records: &[Record]) -> Result<(), StoreError> {
    buf.extend_from_slice(&seq.to_le_bytes());
    let count = u32::try_from(records.len()).map_err(|_| too_large("a submission"))?;
    let mut out = Out(buf);
    out.u32(count);
    for record in records {
        encode_record(&mut out, record)?;
    }
    Ok(())
}

fn encode_record(out: &mut Out<'_>, record: &Record) -> Result<(), StoreError> {
    match record {
        Record::InsertTxn(t) => {
            out.u8(1);
            encode_txn(out, t)?;
        }
        Record::Outcome(o) => {
            out.u8(2);
            out.i64(o.id);
            out.text(o.state.as_str())?;
            out.text(&o.response_code)?;
            out.opt_text(o.auth_code.as_deref())?;
            out.opt_text(o.settlement_date.as_deref())?;
            out.opt_i64(o.issuer_answered_at_ms);
            out.i64(o.answered_at_ms);
        }
        Record::State { id, state } => {
            out.u8(3);
            out.i64(*id);
            out.text(state.as_str())?;
        }
        Record::Refunded { id, refunded_fen } => {
            out.u8(4);
            out.i64(*id);
            out.i64(*refunded_fen);
        }
        Record::Event(e) => {
            out.u8(5);
            out.i64(e.txn_id);
            out.i64(e.at_ms);
            out.text(&e.kind)?;
            out.text(&e.detail)?;
        }
        Record::SafEnqueue {
            txn_id,
            issuer,
            reason,
            next_attempt_ms,
        } => {
            out.u8(6);
            out.i64(*txn_id);
            out.text(issuer)?;
            out.text(reason)?;
            out.i64(*next_attempt_ms);
        }
        Record::SafRetry {
            txn_id,
            next_attempt_ms,
            last_error,
        } => {
            out.u8(7);
            out.i64(*txn_id);
            out.i64(*next_attempt_ms);
            out.text(last_error)?;
        }
        Record::SafDone {
            txn_id,
            state,
            at_ms,
        } => {
            out.u8(8);
            out.i64(*txn_id);
            out.text(state.as_str())?;
            out.i64(*at_ms);
        }
        Record::UpsertMerchant(_)
        | Record::UpsertTerminal(_)
        | Record::SignIn { .. }
        | Record::SignOff { .. }
        | Record::Batch { .. }
        | Record::TerminalHealth(_)
        | Record::Resolve(_)
        | Record::Risk(_)
        | Record::Web(_)
        | Record::Settlement(_) => {
            return Err(StoreError::Backend {
                message: "a record that is not logged reached the journal log".to_owned(),
            });
        }
    }
    Ok(())
}

fn encode_txn(out: &mut Out<'_>, t: &TxnRow) -> Result<(), StoreError> {
    out.i64(t.id);
    out.text(&t.tid)?;
    out.text(&t.mid)?;
    out.u32(t.batch_no);
    out.u32(t.stan);
    out.text(t.kind.as_str())?;
    out.text(&t.mti)?;
    out.text(&t.processing_code)?;
    out.text(&t.condition_code)?;
    out.i64(t.amount_fen);
    out.text(&t.currency)?;
    match &t.pan {
        None => out.u8(0),
        Some(p) => {
            out.u8(1);
            out.bytes(&p.sealed)?;
            out.bytes(&p.fingerprint)?;
            out.text(&p.masked)?;
            out.text(&p.last4)?;
            out.text(&p.bin)?;
        }
    }
    out.opt_text(t.issuer.as_deref())?;
    out.opt_text(t.rrn.as_deref())?;
    out.opt_u32(t.host_trace);
    out.opt_text(t.auth_code.as_deref())?;
    out.opt_text(t.response_code.as_deref())?;
    out.text(t.state.as_str())?;
    out.bytes(&t.request_hash)?;
    out.opt_i64(t.original_id);
    out.i64(t.refunded_fen);
    out.opt_text(t.field60.as_deref())?;
    out.opt_text(t.host_date.as_deref())?;
    out.text(&t.clearing_date)?;
    out.opt_text(t.settlement_date.as_deref())?;
    out.i64(t.received_at_ms);
    out.opt_i64(t.sent_at_ms);
    out.opt_i64(t.issuer_answered_at_ms);
    out.opt_i64(t.answered_at_ms);
    Ok(())
}

// --- decoding

fn corrupt(value: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "journal log entry",
        value: value.into(),
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| corrupt("ends early"))?;
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0_u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = usize::try_from(self.u32()?).map_err(|_| corrupt("length"))?;
        Ok(self.take(len)?.to_vec())
    }
    fn text(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?).map_err(|_| corrupt("text is not UTF-8"))
    }
    fn present(&mut self) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("option marker {other}"))),
        }
    }
    fn opt_text(&mut self) -> Result<Option<String>, StoreError> {
        Ok(if self.present()? {
            Some(self.text()?)
        } else {
            None
        })
    }
    fn opt_i64(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(if self.present()? {
            Some(self.i64()?)
        } else {
            None
        })
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, StoreError> {
        Ok(if self.present()? {
            Some(self.u32()?)
        } else {
            None
        })
    }
}

/// Decodes an entry's body (after the header).
pub(crate) fn decode_body(body: &[u8]) -> Result<Entry, StoreError> {
    let mut input = In(body);
    let seq = input.u64()?;
    let count = input.u32()?;
    let mut records = Vec::new();
    for _ in 0..count {
        records.push(decode_record(&mut input)?);
    }
    if !input.0.is_empty() {
        return Err(corrupt("bytes after the last record"));
    }
    Ok(Entry { seq, records })
}

fn decode_record(input: &mut In<'_>) -> Result<Record, StoreError> {
    Ok(match input.u8()? {
        1 => Record::InsertTxn(Box::new(decode_txn(input)?)),
        2 => Record::Outcome(Outcome {
            id: input.i64()?,
            state: TxnState::parse(&input.text()?)?,
            response_code: input.text()?,
            auth_code: input.opt_text()?,
            settlement_date: input.opt_text()?,
            issuer_answered_at_ms: input.opt_i64()?,
            answered_at_ms: input.i64()?,
        }),
        3 => Record::State {
            id: input.i64()?,
            state: TxnState::parse(&input.text()?)?,
        },
        4 => Record::Refunded {
            id: input.i64()?,
            refunded_fen: input.i64()?,
        },
        5 => Record::Event(EventRow {
            txn_id: input.i64()?,
            at_ms: input.i64()?,
            kind: input.text()?,
            detail: input.text()?,
        }),
        6 => Record::SafEnqueue {
            txn_id: input.i64()?,
            issuer: input.text()?,
            reason: input.text()?,
            next_attempt_ms: input.i64()?,
        },
        7 => Record::SafRetry {
            txn_id: input.i64()?,
            next_attempt_ms: input.i64()?,
            last_error: input.text()?,
        },
        8 => Record::SafDone {
            txn_id: input.i64()?,
            state: SafState::parse(&input.text()?)?,
            at_ms: input.i64()?,
        },
        other => return Err(corrupt(format!("record tag {other}"))),
    })
}

fn decode_txn(input: &mut In<'_>) -> Result<TxnRow, StoreError> {
    Ok(TxnRow {
        id: input.i64()?,
        tid: input.text()?,
        mid: input.text()?,
        batch_no: input.u32()?,
        stan: input.u32()?,
        kind: TxnKind::parse(&input.text()?)?,
        mti: input.text()?,
        processing_code: input.text()?,
        condition_code: input.text()?,
        amount_fen: input.i64()?,
        currency: input.text()?,
        pan: if input.present()? {
            Some(PanAtRest {
                sealed: input.bytes()?,
                fingerprint: input.bytes()?,
                masked: input.text()?,
                last4: input.text()?,
                bin: input.text()?,
            })
        } else {
            None
        },
        issuer: input.opt_text()?,
        rrn: input.opt_text()?,
        host_trace: input.opt_u32()?,
        auth_code: input.opt_text()?,
        response_code: input.opt_text()?,
        state: TxnState::parse(&input.text()?)?,
        request_hash: input.bytes()?,
        original_id: input.opt_i64()?,
        refunded_fen: input.i64()?,
        field60: input.opt_text()?,
        host_date: input.opt_text()?,
        clearing_date: input.text()?,
        settlement_date: input.opt_text()?,
        received_at_ms: input.i64()?,
        sent_at_ms: input.opt_i64()?,
        issuer_answered_at_ms: input.opt_i64()?,
        answered_at_ms: input.opt_i64()?,
    })
}

/// The readable entries at the start of `bytes`, and how many bytes they take. Reading stops
/// at the first entry that is short or fails its checksum (a torn append); an entry that
/// passes its checksum but does not decode is corruption, not a torn write.
pub(crate) fn read_entries(bytes: &[u8]) -> Result<(Vec<Entry>, usize), StoreError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + HEADER) {
        let (len, crc) = header.split_at(4);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt("header"))?);
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| corrupt("header"))?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > BODY_MAX {
            break;
        }
        let Some(body) = bytes.get(offset + HEADER..offset + HEADER + len) else {
            break;
        };
        if crc32(body) != crc {
            break;
        }
        entries.push(decode_body(body)?);
        offset += HEADER + len;
    }
    Ok((entries, offset))
}

// --- files

struct Segment {
    file: File,
    path: PathBuf,
    len: u64,
    /// The highest sequence number in the file (0: none).
    last_seq: u64,
}

impl Segment {
    fn empty(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0).map_err(|e| io_error(&self.path, &e))?;
        self.file.sync_all().map_err(|e| io_error(&self.path, &e))?;
        self.len = 0;
        self.last_seq = 0;
        Ok(())
    }
}

fn io_error(path: &Path, error: &std::io::Error) -> StoreError {
    let message = format!("journal log {}: {error}", path.display());
    if error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
    {
        StoreError::Full { message }
    } else {
        StoreError::Backend { message }
    }
}

/// The two log files of a database, locked by this process while open.
pub(crate) struct LogFiles {
    active: Segment,
    other: Segment,
    /// An append failed and could not be cut back off: nothing more may be appended.
    poisoned: Option<StoreError>,
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn open_segment(path: PathBuf) -> Result<(Segment, Vec<u8>), StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, &e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(&path, &e))?;
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    Ok((
        Segment {
            file,
            path,
            len,
            last_seq: 0,
        },
        bytes,
    ))
}

impl LogFiles {
    /// Opens and locks the log files of the database at `db` and reads their entries, oldest
    /// first. `None` when another store (this process's or another's) holds them: that store
    /// owns the log, and this one commits into the tables directly.
    pub(crate) fn open(db: &Path) -> Result<Option<(LogFiles, Vec<Entry>)>, StoreError> {
        let (mut a, a_bytes) = open_segment(sibling(db, ".txlog-a"))?;
        match a.file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&a.path, &e)),
        }
        let (mut b, b_bytes) = open_segment(sibling(db, ".txlog-b"))?;
        let mut entries = Vec::new();
        for (segment, bytes) in [(&mut a, a_bytes), (&mut b, b_bytes)] {
            let (found, readable) = read_entries(&bytes)?;
            let readable = u64::try_from(readable).unwrap_or(u64::MAX);
            if readable < segment.len {
                // A torn tail: cut it off so that appends follow the last whole entry.
                segment
                    .file
                    .set_len(readable)
                    .map_err(|e| io_error(&segment.path, &e))?;
                segment.len = readable;
            }
            segment.last_seq = found.iter().map(|e| e.seq).max().unwrap_or(0);
            entries.extend(found);
        }
        entries.sort_by_key(|e| e.seq);
        // The directory entries of newly created files must survive a crash too.
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(Some((
            LogFiles {
                active: a,
                other: b,
                poisoned: None,
            },
            entries,
        )))
    }

    /// Empties both files: everything in them is durably in the tables.
    pub(crate) fn clear(&mut self) -> Result<(), StoreError> {
        self.active.empty()?;
        self.other.empty()
    }

    /// The highest sequence number in either file.
    pub(crate) fn last_seq(&self) -> u64 {
        self.active.last_seq.max(self.other.last_seq)
    }

    /// Appends encoded entries (the highest numbered `last_seq`) and, if `sync`, waits until
    /// they are on disk. On failure the file is cut back to where it was, so that nothing of a
    /// failed append is ever replayed; if even that fails, the log refuses every later append.
    pub(crate) fn append(
        &mut self,
        buf: &[u8],
        last_seq: u64,
        sync: bool,
    ) -> Result<(), StoreError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let segment = &mut self.active;
        let written = segment.file.write_all_at(buf, segment.len).and_then(|()| {
            if sync {
                segment.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                segment.len += u64::try_from(buf.len()).unwrap_or(u64::MAX);
                segment.last_seq = last_seq;
                Ok(())
            }
            Err(e) => {
                let error = io_error(&segment.path, &e);
                let cut = segment
                    .file
                    .set_len(segment.len)
                    .and_then(|()| segment.file.sync_data());
                if let Err(cut) = cut {
                    self.poisoned = Some(StoreError::Backend {
                        message: format!(
                            "journal log {}: a failed append could not be cut off ({cut}); \
                             refusing writes until restart",
                            segment.path.display()
                        ),
                    });
                }
                Err(error)
            }
        }
    }

    /// Swaps the active file for the other one once the active one is past [`ROTATE_BYTES`]
    /// and every entry of the other one is durable in the tables (`durable`). Returns whether
    /// a rotation is due but waits for the tables to become durable.
    pub(crate) fn rotate(&mut self, durable: u64) -> Result<bool, StoreError> {
        if self.active.len < ROTATE_BYTES {
            return Ok(false);
        }
        if self.other.last_seq > durable {
            return Ok(true);
        }
        self.other.empty()?;
        std::mem::swap(&mut self.active, &mut self.other);
        Ok(false)
    }
}
