//! Shared by the settlement tests: a real SQLite store in a tempdir, journal rows, a sealer over
//! the software HSM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::sync::Arc;

use paycrypto::{Hsm, MasterKey, OsRandom, SoftHsm};
use settlement::Sealer;
use store::{
    MerchantRow, PanAtRest, Record, SqliteConfig, SqliteStore, Status, Store, TxnKind, TxnRow,
    TxnState,
};

pub struct HsmSealer(pub Arc<SoftHsm>);

impl Sealer for HsmSealer {
    fn seal(&self, clear: &str) -> Result<Vec<u8>, String> {
        self.0.seal(clear.as_bytes()).map_err(|e| e.to_string())
    }
    fn open(&self, sealed: &[u8]) -> Result<zeroize::Zeroizing<String>, String> {
        let clear = self.0.open(sealed).map_err(|e| e.to_string())?;
        let text = std::str::from_utf8(&clear).map_err(|e| e.to_string())?;
        Ok(zeroize::Zeroizing::new(text.to_owned()))
    }
}

pub fn sealer() -> HsmSealer {
    let master = MasterKey::generate(&OsRandom).unwrap();
    HsmSealer(Arc::new(SoftHsm::new(&master, Box::new(OsRandom))))
}

pub fn open_store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&SqliteConfig::new(dir.path().join("s.db"))).unwrap())
}

pub fn merchant(store: &dyn Store, mid: &str) {
    store
        .submit(vec![Record::UpsertMerchant(MerchantRow {
            mid: mid.into(),
            name: format!("merchant {mid}"),
            status: Status::Active,
            mcc: "5812".into(),
        })])
        .unwrap()
        .wait()
        .unwrap();
}

pub fn row(
    id: i64,
    mid: &str,
    kind: TxnKind,
    state: TxnState,
    amount_fen: i64,
    bin: &str,
    date: &str,
) -> TxnRow {
    TxnRow {
        id,
        tid: "10000001".into(),
        mid: mid.into(),
        batch_no: 1,
        stan: u32::try_from(id).unwrap(),
        kind,
        mti: "0200".into(),
        processing_code: "000000".into(),
        condition_code: "00".into(),
        amount_fen,
        currency: "156".into(),
        pan: Some(PanAtRest {
            sealed: vec![1],
            fingerprint: vec![2],
            masked: format!("{bin}******0000"),
            last4: "0000".into(),
            bin: bin.into(),
        }),
        issuer: Some(if bin.starts_with('4') { "VISA" } else { "ICBC" }.into()),
        rrn: Some(format!("{id:012}")),
        host_trace: None,
        auth_code: None,
        response_code: Some("00".into()),
        state,
        request_hash: vec![0],
        original_id: None,
        refunded_fen: 0,
        field60: None,
        host_date: None,
        clearing_date: date.into(),
        settlement_date: None,
        received_at_ms: 0,
        sent_at_ms: None,
        issuer_answered_at_ms: None,
        answered_at_ms: None,
    }
}

pub fn insert(store: &dyn Store, rows: Vec<TxnRow>) {
    let records = rows
        .into_iter()
        .map(|r| Record::InsertTxn(Box::new(r)))
        .collect();
    store.submit(records).unwrap().wait().unwrap();
}

/// A Luhn-valid card number of `len` digits on `bin`.
pub fn card(bin: &str, len: usize, seed: u64) -> String {
    let mut digits = bin.to_owned();
    let body = format!("{seed:020}");
    digits.push_str(&body[body.len() - (len - 1 - bin.len())..]);
    let check = domain::luhn_check_digit(digits.as_bytes()).unwrap();
    digits.push(char::from(check));
    digits
}
