//! Which transaction a message is: financial requests by MTI + F3[0..2] + F25 + 60.1,
//! management messages by MTI + 60.3 (PROTOCOL.md, "Transactions").

use crate::codes::Mti;
use crate::message::Message;

/// A financial transaction (the rows of the PROTOCOL.md table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Financial {
    BalanceInquiry,
    Purchase,
    PurchaseVoid,
    Refund,
    PreAuthorisation,
    PreAuthorisationVoid,
    PreAuthorisationCompletion,
    CompletionVoid,
}

/// Key scheme a sign-in asks for (60.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignInKeys {
    /// 001: single-length DES keys.
    Single,
    /// 003: double-length 3DES keys.
    Double,
    /// 004: double-length keys plus a track key.
    DoubleWithTrackKey,
    /// 006: SM4 keys.
    Sm4,
}

/// Batch-upload flavours (60.3 of a 0320).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchUploadKind {
    /// 201: magstripe transactions.
    Magstripe,
    /// 203: IC transactions, batch balanced.
    IcBalanced,
    /// 205: IC transactions, batch unbalanced.
    IcUnbalanced,
}

/// What a message is, for routing to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnKind {
    Financial(Financial),
    /// 0400: reversal of the financial transaction its fields describe.
    Reversal(Financial),
    SignIn(SignInKeys),
    SignOff,
    EchoTest,
    Settlement,
    BatchUpload(BatchUploadKind),
    /// Batch-upload end; 60.3 = 207 or 202.
    BatchUploadEnd {
        network_code: u16,
    },
}

impl TxnKind {
    /// Classifies a request MTI (or the response to one: the fields echo the request's) from
    /// the first two digits of field 3, field 25, 60.1 and 60.3. `None`: not in the table.
    pub fn classify(
        mti: Mti,
        transaction_type: Option<u8>,
        condition: Option<u8>,
        message_type: Option<u8>,
        network_code: Option<u16>,
    ) -> Option<TxnKind> {
        let mti = mti.request().unwrap_or(mti);
        if message_type == Some(0) {
            let kind = match (mti.value(), network_code?) {
                (800, 1) => TxnKind::SignIn(SignInKeys::Single),
                (800, 3) => TxnKind::SignIn(SignInKeys::Double),
                (800, 4) => TxnKind::SignIn(SignInKeys::DoubleWithTrackKey),
                (800, 6) => TxnKind::SignIn(SignInKeys::Sm4),
                (820, 2) => TxnKind::SignOff,
                (820, 301) => TxnKind::EchoTest,
                (500, 201) => TxnKind::Settlement,
                (320, 201) => TxnKind::BatchUpload(BatchUploadKind::Magstripe),
                (320, 203) => TxnKind::BatchUpload(BatchUploadKind::IcBalanced),
                (320, 205) => TxnKind::BatchUpload(BatchUploadKind::IcUnbalanced),
                (320, code @ (202 | 207)) => TxnKind::BatchUploadEnd { network_code: code },
                _ => return None,
            };
            return Some(kind);
        }
        use Financial::*;
        let reversal = mti == Mti::REVERSAL;
        let financial = match (
            reversal,
            mti.value(),
            transaction_type?,
            condition?,
            message_type?,
        ) {
            (false, 200, 31, 0, 1) | (true, _, 31, 0, 1) => BalanceInquiry,
            (false, 200, 0, 0, 22) | (true, _, 0, 0, 22) => Purchase,
            (false, 200, 20, 0, 23) | (true, _, 20, 0, 23) => PurchaseVoid,
            (false, 220, 20, 0, 25) | (true, _, 20, 0, 25) => Refund,
            (false, 100, 3, 6, 10) | (true, _, 3, 6, 10) => PreAuthorisation,
            (false, 100, 20, 6, 11) | (true, _, 20, 6, 11) => PreAuthorisationVoid,
            (false, 200, 0, 6, 20) | (true, _, 0, 6, 20) => PreAuthorisationCompletion,
            (false, 200, 20, 6, 21) | (true, _, 20, 6, 21) => CompletionVoid,
            _ => return None,
        };
        Some(if reversal {
            TxnKind::Reversal(financial)
        } else {
            TxnKind::Financial(financial)
        })
    }
}

impl Message<'_> {
    /// The transaction this message is, or `None` if it is not in the table (or field 60 is
    /// malformed).
    pub fn txn_kind(&self) -> Option<TxnKind> {
        let f60 = self.field60().ok().flatten();
        let narrow = |n: u8| self.number(n).and_then(|v| u8::try_from(v).ok());
        TxnKind::classify(
            self.mti(),
            self.processing_code().map(|p| p.transaction_type()),
            narrow(25),
            f60.map(|f| f.message_type),
            f60.and_then(|f| f.network_code),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Financial::*;

    fn fin(mti: u16, f3: u8, f25: u8, f60_1: u8) -> Option<TxnKind> {
        TxnKind::classify(
            Mti::new(mti).unwrap(),
            Some(f3),
            Some(f25),
            Some(f60_1),
            None,
        )
    }

    fn mgmt(mti: u16, code: u16) -> Option<TxnKind> {
        TxnKind::classify(Mti::new(mti).unwrap(), None, None, Some(0), Some(code))
    }

    #[test]
    fn financial_table_of_protocol_md() {
        let table = [
            (200, 31, 0, 1, BalanceInquiry),
            (200, 0, 0, 22, Purchase),
            (200, 20, 0, 23, PurchaseVoid),
            (220, 20, 0, 25, Refund),
            (100, 3, 6, 10, PreAuthorisation),
            (100, 20, 6, 11, PreAuthorisationVoid),
            (200, 0, 6, 20, PreAuthorisationCompletion),
            (200, 20, 6, 21, CompletionVoid),
        ];
        for (mti, f3, f25, f60, kind) in table {
            assert_eq!(fin(mti, f3, f25, f60), Some(TxnKind::Financial(kind)));
            assert_eq!(
                fin(mti + 10, f3, f25, f60),
                Some(TxnKind::Financial(kind)),
                "response"
            );
            assert_eq!(fin(400, f3, f25, f60), Some(TxnKind::Reversal(kind)));
            assert_eq!(fin(410, f3, f25, f60), Some(TxnKind::Reversal(kind)));
            // Any one element off and it is not this transaction.
            assert_eq!(fin(mti, f3, f25 ^ 1, f60), None);
            assert_ne!(fin(mti, f3, f25, f60 + 1), Some(TxnKind::Financial(kind)));
        }
        assert_eq!(fin(220, 0, 0, 22), None);
        assert_eq!(
            TxnKind::classify(Mti::FINANCIAL, None, Some(0), Some(22), None),
            None
        );
    }

    #[test]
    fn management_by_mti_and_60_3() {
        assert_eq!(mgmt(800, 1), Some(TxnKind::SignIn(SignInKeys::Single)));
        assert_eq!(mgmt(810, 3), Some(TxnKind::SignIn(SignInKeys::Double)));
        assert_eq!(
            mgmt(800, 4),
            Some(TxnKind::SignIn(SignInKeys::DoubleWithTrackKey))
        );
        assert_eq!(mgmt(800, 6), Some(TxnKind::SignIn(SignInKeys::Sm4)));
        assert_eq!(mgmt(820, 2), Some(TxnKind::SignOff));
        assert_eq!(mgmt(820, 301), Some(TxnKind::EchoTest));
        assert_eq!(mgmt(500, 201), Some(TxnKind::Settlement));
        assert_eq!(
            mgmt(320, 201),
            Some(TxnKind::BatchUpload(BatchUploadKind::Magstripe))
        );
        assert_eq!(
            mgmt(320, 203),
            Some(TxnKind::BatchUpload(BatchUploadKind::IcBalanced))
        );
        assert_eq!(
            mgmt(330, 205),
            Some(TxnKind::BatchUpload(BatchUploadKind::IcUnbalanced))
        );
        assert_eq!(
            mgmt(320, 207),
            Some(TxnKind::BatchUploadEnd { network_code: 207 })
        );
        assert_eq!(
            mgmt(320, 202),
            Some(TxnKind::BatchUploadEnd { network_code: 202 })
        );
        assert_eq!(mgmt(800, 2), None);
        assert_eq!(mgmt(200, 1), None);
        assert_eq!(
            TxnKind::classify(Mti::NETWORK, None, None, Some(0), None),
            None
        );
    }
}
