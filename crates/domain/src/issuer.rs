//! The issuer directory: card BIN → issuing bank, card type, expected PAN length and the bank's
//! contact channels. Loaded from CSV (the embedded CUP table or an operator's own); no IO here.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::card::{CardNetwork, CardType};
use crate::pan::{BIN_LEN_MAX, PAN_LEN_MAX, PAN_LEN_MIN, Pan};

/// The default tables, compiled in from `data/bin/` (MIT, bcbc project; see [`EMBEDDED_LICENSE`]).
pub const EMBEDDED_BIN_CSV: &str = include_str!("../../../data/bin/bin.csv");
pub const EMBEDDED_BANK_NAMES_CSV: &str = include_str!("../../../data/bin/bank-names.csv");
pub const EMBEDDED_CONTACTS_CSV: &str = include_str!("../../../data/bin/issuer-contacts.csv");
/// The BIN data's licence: it must ship with any copy of the data, the binary included.
pub const EMBEDDED_LICENSE: &str = include_str!("../../../data/bin/LICENSE");

/// BINs in the CUP table run from 3 to 10 digits (a few issuers split a 6-digit BIN further).
pub const BIN_LEN_MIN: usize = 3;
/// A bound on an operator's table, so a wrong file fails loudly instead of filling memory.
pub const DIRECTORY_ROWS_MAX: usize = 200_000;

const BIN_HEADER: &str = "bin,bank,type,length";
const NAMES_HEADER: &str = "bank,name";
const CONTACTS_HEADER: &str = "bank,service_phone,website";

/// English names for the banks in `issuer-contacts.csv`; the CSV has Chinese names only.
const ENGLISH_NAMES: &[(&str, &str)] = &[
    ("ICBC", "Industrial and Commercial Bank of China"),
    ("ABC", "Agricultural Bank of China"),
    ("BOC", "Bank of China"),
    ("CCB", "China Construction Bank"),
    ("COMM", "Bank of Communications"),
    ("PSBC", "Postal Savings Bank of China"),
    ("CMB", "China Merchants Bank"),
    ("CITIC", "China CITIC Bank"),
    ("CEB", "China Everbright Bank"),
    ("HXBANK", "Hua Xia Bank"),
    ("CMBC", "China Minsheng Bank"),
    ("GDB", "China Guangfa Bank"),
    ("SPDB", "Shanghai Pudong Development Bank"),
    ("CIB", "Industrial Bank"),
    ("SPABANK", "Ping An Bank"),
    ("BJBANK", "Bank of Beijing"),
    ("SHBANK", "Bank of Shanghai"),
    ("EGBANK", "Evergrowing Bank"),
    ("CZBANK", "China Zheshang Bank"),
    ("BOHAIB", "China Bohai Bank"),
];

/// Which of the three files an error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvFile {
    Bins,
    BankNames,
    Contacts,
}

impl fmt::Display for CsvFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CsvFile::Bins => "bin.csv",
            CsvFile::BankNames => "bank-names.csv",
            CsvFile::Contacts => "issuer-contacts.csv",
        })
    }
}

/// A directory that failed to load: which file, which line (1-based), what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {problem}")]
pub struct DirectoryError {
    pub file: CsvFile,
    pub line: usize,
    pub problem: RowProblem,
}

/// What is wrong with one line. The BIN column is never echoed: a misplaced file could put card
/// numbers there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("the first line must be the header `{expected}`")]
    Header { expected: &'static str },
    #[error("expected {expected} comma-separated columns, got {got}")]
    Columns { expected: usize, got: usize },
    #[error("quoted fields are not supported")]
    Quoted,
    #[error("column `{column}` is empty")]
    Empty { column: &'static str },
    #[error("BIN must be {BIN_LEN_MIN} to {BIN_LEN_MAX} digits")]
    Bin,
    #[error("card type must be DC, CC, SCC or PC, got `{0}`")]
    CardType(String),
    #[error("PAN length must be {PAN_LEN_MIN} to {PAN_LEN_MAX} and longer than the BIN, got `{0}`")]
    PanLength(String),
    #[error("bank code `{0}` is not in bank-names.csv")]
    UnknownBank(String),
    #[error("bank code `{code}` already appears on line {first_line}")]
    DuplicateBank { code: String, first_line: usize },
    #[error("the same BIN and PAN length already appear on line {first_line}")]
    DuplicateBin { first_line: usize },
    #[error("more than {DIRECTORY_ROWS_MAX} rows")]
    TooManyRows,
}

/// An issuing bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bank {
    code: String,
    name_zh: String,
    name_en: Option<&'static str>,
    contact: Option<(String, String)>,
}

impl Bank {
    /// The table's bank code, e.g. `ICBC`.
    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn name_zh(&self) -> &str {
        &self.name_zh
    }

    /// Known for the larger banks only; callers fall back to the Chinese name.
    pub fn name_en(&self) -> Option<&'static str> {
        self.name_en
    }

    /// How a cardholder (or merchant) reaches this bank, or an explicit "we don't know".
    pub fn contact(&self) -> IssuerContact<'_> {
        match &self.contact {
            Some((phone, website)) => IssuerContact::Known { phone, website },
            None => IssuerContact::NoKnownContact,
        }
    }
}

/// Contact channels of an issuer. `NoKnownContact` is an answer, not a gap to fill with a guess:
/// tell the cardholder to call the number on the back of the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerContact<'a> {
    Known { phone: &'a str, website: &'a str },
    NoKnownContact,
}

/// One row of the BIN table, kept small: the bank is an index into the directory's banks.
#[derive(Debug, Clone, Copy)]
struct BinRow {
    bank: u16,
    card_type: CardType,
    pan_len: u8,
}

/// The issuer of a card as the BIN table has it.
#[derive(Debug, Clone, Copy)]
pub struct IssuerMatch<'a> {
    pub bank: &'a Bank,
    pub card_type: CardType,
    /// How many leading digits matched.
    pub bin_len: usize,
    /// The PAN length the table gives for this BIN.
    pub expected_pan_len: usize,
    /// The length of the PAN that was looked up.
    pub pan_len: usize,
}

impl IssuerMatch<'_> {
    /// False when the card's length differs from the table's: a mistyped number, a misread
    /// card, or a BIN the issuer reuses for a length our table does not know.
    pub fn length_matches(&self) -> bool {
        self.expected_pan_len == self.pan_len
    }
}

/// What the directory knows about a card number.
#[derive(Debug, Clone, Copy)]
pub struct CardLookup<'a> {
    pub network: CardNetwork,
    /// `None`: not in the BIN table (a foreign card, or a domestic bank our table lacks).
    pub issuer: Option<IssuerMatch<'a>>,
}

/// Hashing for BIN prefixes. The keys are our own table, so SipHash's flooding resistance buys
/// nothing, and this sits on the authorisation path.
#[derive(Default, Clone, Copy)]
struct PrefixHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(MIX);
    }

    fn finish(&self) -> u64 {
        // The table picks buckets with the low bits: fold the well-mixed high bits down.
        self.0 ^ (self.0 >> 32)
    }
}

type PrefixMap = HashMap<u64, (usize, usize), BuildHasherDefault<PrefixHasher>>;

/// ASCII digits (checked by the caller) as a number.
fn digits_value(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'))
}

/// BIN → issuer, with longest-prefix match. Build once, share, look up without allocating.
#[derive(Debug, Clone)]
pub struct IssuerDirectory {
    banks: Vec<Bank>,
    rows: Vec<BinRow>,
    /// One map per BIN length present, longest first: prefix as a number → `rows[start..end]`
    /// (several rows when one BIN is issued at several PAN lengths).
    by_len: Vec<(usize, PrefixMap)>,
    /// Each row's BIN as a number, parallel to `rows`: sorted within one BIN length.
    bin_values: Vec<u64>,
    /// The rows of each entry of `by_len`, as `rows[start..end]`.
    len_spans: Vec<(usize, usize)>,
}

impl IssuerDirectory {
    /// The CUP table shipped with shoudan.
    pub fn embedded() -> Result<IssuerDirectory, DirectoryError> {
        IssuerDirectory::from_csv(
            EMBEDDED_BIN_CSV,
            EMBEDDED_BANK_NAMES_CSV,
            EMBEDDED_CONTACTS_CSV,
        )
    }

    /// An operator's own tables, same columns as the embedded ones (headers required; UTF-8,
    /// an optional BOM, LF or CRLF, blank lines ignored, no quoting).
    pub fn from_csv(bins: &str, names: &str, contacts: &str) -> Result<Self, DirectoryError> {
        let mut banks: Vec<Bank> = Vec::new();
        let mut bank_index: HashMap<&str, (u16, usize)> = HashMap::new();
        for (line, fields) in csv_rows(names, CsvFile::BankNames, NAMES_HEADER)? {
            let err = |problem| DirectoryError {
                file: CsvFile::BankNames,
                line,
                problem,
            };
            let [code, name] = fields_array::<2>(&fields, &["bank", "name"]).map_err(err)?;
            if let Some(&(_, first_line)) = bank_index.get(code) {
                let code = code.to_owned();
                return Err(err(RowProblem::DuplicateBank { code, first_line }));
            }
            let index = u16::try_from(banks.len()).map_err(|_| err(RowProblem::TooManyRows))?;
            bank_index.insert(code, (index, line));
            banks.push(Bank {
                code: code.to_owned(),
                name_zh: name.to_owned(),
                name_en: ENGLISH_NAMES
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map(|(_, en)| *en),
                contact: None,
            });
        }

        let mut contact_lines: HashMap<&str, usize> = HashMap::new();
        for (line, fields) in csv_rows(contacts, CsvFile::Contacts, CONTACTS_HEADER)? {
            let err = |problem| DirectoryError {
                file: CsvFile::Contacts,
                line,
                problem,
            };
            let [code, phone, website] =
                fields_array::<3>(&fields, &["bank", "service_phone", "website"]).map_err(err)?;
            if let Some(&first_line) = contact_lines.get(code) {
                let code = code.to_owned();
                return Err(err(RowProblem::DuplicateBank { code, first_line }));
            }
            contact_lines.insert(code, line);
            let bank = bank_index
                .get(code)
                .and_then(|&(i, _)| banks.get_mut(usize::from(i)))
                .ok_or_else(|| err(RowProblem::UnknownBank(code.to_owned())))?;
            bank.contact = Some((phone.to_owned(), website.to_owned()));
        }

        // (BIN length, BIN value, PAN length) → line, to catch repeats and to sort.
        let mut seen: HashMap<(usize, u64, u8), usize> = HashMap::new();
        let mut keyed: Vec<(usize, u64, BinRow)> = Vec::new();
        for (line, fields) in csv_rows(bins, CsvFile::Bins, BIN_HEADER)? {
            let err = |problem| DirectoryError {
                file: CsvFile::Bins,
                line,
                problem,
            };
            let [bin, code, card_type, length] =
                fields_array::<4>(&fields, &["bin", "bank", "type", "length"]).map_err(err)?;
            let bin_value = parse_bin(bin).ok_or_else(|| err(RowProblem::Bin))?;
            let (bank, _) = *bank_index
                .get(code)
                .ok_or_else(|| err(RowProblem::UnknownBank(code.to_owned())))?;
            let card_type = CardType::from_code(card_type)
                .ok_or_else(|| err(RowProblem::CardType(card_type.to_owned())))?;
            let pan_len = length
                .parse::<u8>()
                .ok()
                .filter(|&n| {
                    (PAN_LEN_MIN..=PAN_LEN_MAX).contains(&usize::from(n))
                        && usize::from(n) > bin.len()
                })
                .ok_or_else(|| err(RowProblem::PanLength(length.to_owned())))?;
            if let Some(&first_line) = seen.get(&(bin.len(), bin_value, pan_len)) {
                return Err(err(RowProblem::DuplicateBin { first_line }));
            }
            seen.insert((bin.len(), bin_value, pan_len), line);
            keyed.push((
                bin.len(),
                bin_value,
                BinRow {
                    bank,
                    card_type,
                    pan_len,
                },
            ));
        }

        // Longest BIN first; rows of one prefix end up adjacent and keep their file order.
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut rows = Vec::with_capacity(keyed.len());
        let mut bin_values = Vec::with_capacity(keyed.len());
        let mut by_len: Vec<(usize, PrefixMap)> = Vec::new();
        let mut len_spans: Vec<(usize, usize)> = Vec::new();
        for (bin_len, value, row) in keyed {
            let index = rows.len();
            rows.push(row);
            bin_values.push(value);
            if by_len.last().is_none_or(|(len, _)| *len != bin_len) {
                by_len.push((bin_len, PrefixMap::default()));
                len_spans.push((index, index));
            }
            if let Some(span) = len_spans.last_mut() {
                span.1 = index + 1;
            }
            if let Some((_, map)) = by_len.last_mut() {
                map.entry(value)
                    .and_modify(|range| range.1 = index + 1)
                    .or_insert((index, index + 1));
            }
        }
        Ok(IssuerDirectory {
            banks,
            rows,
            by_len,
            bin_values,
            len_spans,
        })
    }

    /// The issuer of a (Luhn-checked) card.
    pub fn lookup(&self, pan: &Pan) -> CardLookup<'_> {
        self.lookup_digits(pan.expose_digits())
    }

    /// The issuer of a digit string that need not be a valid PAN (e.g. to tell an operator
    /// whose card a mistyped number would be). Anything but ASCII digits finds nothing.
    ///
    /// A row matches when its BIN is a prefix and its PAN length is the card's: some BINs are
    /// issued at two lengths by two banks. The longest such row wins; if no row agrees on the
    /// length, the longest prefix alone is returned with `length_matches()` false.
    pub fn lookup_digits(&self, digits: &str) -> CardLookup<'_> {
        self.lookup_within(digits, BIN_LEN_MAX)
    }

    /// The issuer of a card of `pan_len` digits when only its first digits, `prefix`, are
    /// known (a journal keeps a card's first six). Only BINs no longer than `prefix` decide,
    /// since the digits after it are unknown: padding them would take a longer BIN that
    /// happens to continue with zeros for the card's. When no such BIN matches but longer
    /// ones extend `prefix` at that length, the card is domestic, and its bank is theirs when
    /// they all share one.
    pub fn lookup_prefix(&self, prefix: &str, pan_len: usize) -> CardLookup<'_> {
        let bytes = prefix.as_bytes();
        if bytes.is_empty()
            || bytes.len() >= pan_len
            || bytes.len() > BIN_LEN_MAX
            || !bytes.iter().all(u8::is_ascii_digit)
        {
            return self.lookup_digits(prefix);
        }
        let mut digits = String::with_capacity(pan_len);
        digits.push_str(prefix);
        while digits.len() < pan_len {
            digits.push('0');
        }
        let known = self.lookup_within(&digits, bytes.len());
        if known.issuer.is_some() {
            return known;
        }
        let value = digits_value(bytes);
        let mut under: Option<BinRow> = None;
        let mut shared = true;
        for ((bin_len, _), &span) in self.by_len.iter().zip(&self.len_spans) {
            for row in self.rows_extending(value, bytes.len(), *bin_len, span) {
                if usize::from(row.pan_len) != pan_len {
                    continue;
                }
                match under {
                    None => under = Some(*row),
                    Some(seen) if seen.bank != row.bank => shared = false,
                    Some(_) => {}
                }
            }
        }
        match under {
            Some(row) if shared => self.found(bytes.len(), row, pan_len),
            Some(_) => CardLookup {
                network: CardNetwork::DomesticCup,
                issuer: None,
            },
            None => known,
        }
    }

    /// [`IssuerDirectory::lookup_digits`] with BINs of at most `max_bin_len` digits.
    fn lookup_within(&self, digits: &str, max_bin_len: usize) -> CardLookup<'_> {
        let bytes = digits.as_bytes();
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return CardLookup {
                network: CardNetwork::Other,
                issuer: None,
            };
        }
        // prefix_values[n] = the first n digits as a number, computed once for every length.
        let mut prefix_values = [0u64; BIN_LEN_MAX + 1];
        let mut value = 0u64;
        for (slot, &b) in prefix_values.iter_mut().skip(1).zip(bytes) {
            value = value * 10 + u64::from(b - b'0');
            *slot = value;
        }
        let pan_len = bytes.len();
        let mut fallback: Option<(usize, BinRow)> = None;
        for (bin_len, map) in &self.by_len {
            if *bin_len >= pan_len || *bin_len > max_bin_len {
                continue;
            }
            let Some(prefix) = prefix_values.get(*bin_len) else {
                continue;
            };
            let Some(&(start, end)) = map.get(prefix) else {
                continue;
            };
            let Some(rows) = self.rows.get(start..end) else {
                continue;
            };
            if let Some(row) = rows.iter().find(|r| usize::from(r.pan_len) == pan_len) {
                return self.found(*bin_len, *row, pan_len);
            }
            if fallback.is_none() {
                fallback = rows.first().map(|row| (*bin_len, *row));
            }
        }
        match fallback {
            Some((bin_len, row)) => self.found(bin_len, row, pan_len),
            None => CardLookup {
                network: CardNetwork::from_prefix(digits),
                issuer: None,
            },
        }
    }

    /// The card types a card of `pan_len` digits may have when only its first digits,
    /// `prefix`, are known (a journal keeps a card's first six): those of the rows whose BIN
    /// extends `prefix` at that PAN length, and of the longest row at that length whose BIN
    /// `prefix` starts with (the cards the longer ones leave). Empty when the table has none,
    /// or `prefix` is not all digits.
    pub fn card_types_under(&self, prefix: &str, pan_len: usize) -> Vec<CardType> {
        let bytes = prefix.as_bytes();
        if bytes.is_empty() || bytes.len() > BIN_LEN_MAX || !bytes.iter().all(u8::is_ascii_digit) {
            return Vec::new();
        }
        let value = digits_value(bytes);
        let at_len = |range: (usize, usize)| {
            self.rows
                .get(range.0..range.1)
                .unwrap_or_default()
                .iter()
                .filter(|r| usize::from(r.pan_len) == pan_len)
                .map(|r| r.card_type)
                .collect::<Vec<_>>()
        };
        let mut types = Vec::new();
        let mut shorter_found = false;
        // Longest first: the first shorter row found is the one a lookup would take.
        for ((bin_len, map), &(start, end)) in self.by_len.iter().zip(&self.len_spans) {
            if *bin_len > bytes.len() {
                types.extend(
                    self.rows_extending(value, bytes.len(), *bin_len, (start, end))
                        .iter()
                        .filter(|r| usize::from(r.pan_len) == pan_len)
                        .map(|r| r.card_type),
                );
            } else if !shorter_found {
                let shift = 10u64.pow(u32::try_from(bytes.len() - bin_len).unwrap_or(0));
                if let Some(&range) = map.get(&(value / shift)) {
                    let found = at_len(range);
                    shorter_found = !found.is_empty();
                    types.extend(found);
                }
            }
        }
        let mut distinct: Vec<CardType> = Vec::with_capacity(types.len());
        for t in types {
            if !distinct.contains(&t) {
                distinct.push(t);
            }
        }
        distinct
    }

    /// The rows of BIN length `bin_len` (`rows[span]`, sorted by BIN) whose BIN extends a
    /// shorter prefix of `prefix_len` digits worth `value`: one run of them. None when
    /// `bin_len` is not longer than the prefix.
    fn rows_extending(
        &self,
        value: u64,
        prefix_len: usize,
        bin_len: usize,
        (start, end): (usize, usize),
    ) -> &[BinRow] {
        let Some(scale) = bin_len
            .checked_sub(prefix_len)
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .and_then(|n| 10u64.checked_pow(n))
        else {
            return &[];
        };
        let values = self.bin_values.get(start..end).unwrap_or_default();
        let low = value.saturating_mul(scale);
        let high = value.saturating_add(1).saturating_mul(scale);
        let first = start + values.partition_point(|&v| v < low);
        let last = start + values.partition_point(|&v| v < high);
        self.rows.get(first..last).unwrap_or_default()
    }

    fn found(&self, bin_len: usize, row: BinRow, pan_len: usize) -> CardLookup<'_> {
        let issuer = self
            .banks
            .get(usize::from(row.bank))
            .map(|bank| IssuerMatch {
                bank,
                card_type: row.card_type,
                bin_len,
                expected_pan_len: usize::from(row.pan_len),
                pan_len,
            });
        CardLookup {
            network: CardNetwork::DomesticCup,
            issuer,
        }
    }

    /// A bank by its code, e.g. for a settlement account's bank.
    pub fn bank(&self, code: &str) -> Option<&Bank> {
        self.banks.iter().find(|b| b.code == code)
    }

    pub fn banks(&self) -> &[Bank] {
        &self.banks
    }

    /// Number of BIN rows.
    pub fn bin_count(&self) -> usize {
        self.rows.len()
    }
}

fn parse_bin(bin: &str) -> Option<u64> {
    if !(BIN_LEN_MIN..=BIN_LEN_MAX).contains(&bin.len()) || !bin.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    bin.parse().ok()
}

/// The data lines of a small CSV: header checked, 1-based line numbers, fields trimmed.
fn csv_rows<'a>(
    text: &'a str,
    file: CsvFile,
    header: &'static str,
) -> Result<Vec<(usize, Vec<&'a str>)>, DirectoryError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let header_ok = lines.next().is_some_and(|(_, first)| first == header);
    if !header_ok {
        return Err(DirectoryError {
            file,
            line: 1,
            problem: RowProblem::Header { expected: header },
        });
    }
    let columns = header.split(',').count();
    let mut rows = Vec::new();
    for (line, content) in lines.filter(|(_, l)| !l.is_empty()) {
        let err = |problem| DirectoryError {
            file,
            line,
            problem,
        };
        if rows.len() >= DIRECTORY_ROWS_MAX {
            return Err(err(RowProblem::TooManyRows));
        }
        if content.contains('"') {
            return Err(err(RowProblem::Quoted));
        }
        let fields: Vec<&str> = content.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(err(RowProblem::Columns {
                expected: columns,
                got: fields.len(),
            }));
        }
        rows.push((line, fields));
    }
    Ok(rows)
}

fn fields_array<'a, const N: usize>(
    fields: &[&'a str],
    names: &[&'static str; N],
) -> Result<[&'a str; N], RowProblem> {
    let mut out = [""; N];
    for ((slot, field), column) in out.iter_mut().zip(fields).zip(names) {
        if field.is_empty() {
            return Err(RowProblem::Empty { column });
        }
        *slot = field;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> IssuerDirectory {
        IssuerDirectory::embedded().unwrap()
    }

    /// A digit string of `len` digits starting with `prefix`, padded with `fill`.
    fn digits(prefix: &str, len: usize) -> String {
        let mut s = prefix.to_owned();
        while s.len() < len {
            s.push('1');
        }
        s
    }

    /// `card_types_under` against a walk of every row: for every prefix of every BIN in the
    /// table (and the prefixes one above each), at every card length.
    #[test]
    fn card_types_under_finds_what_a_walk_of_every_row_finds() {
        let d = dir();
        let walk = |prefix: &str, pan_len: usize| -> Vec<CardType> {
            let value: u64 = prefix.parse().unwrap();
            let plen = prefix.len();
            let mut types = Vec::new();
            let mut shorter_found = false;
            for ((bin_len, _), &(start, end)) in d.by_len.iter().zip(&d.len_spans) {
                let mut shorter_here = false;
                for i in start..end {
                    let (bin, row) = (d.bin_values[i], &d.rows[i]);
                    if usize::from(row.pan_len) != pan_len {
                        continue;
                    }
                    if *bin_len > plen {
                        if bin / 10u64.pow(u32::try_from(bin_len - plen).unwrap()) == value {
                            types.push(row.card_type);
                        }
                    } else if !shorter_found
                        && value / 10u64.pow(u32::try_from(plen - bin_len).unwrap()) == bin
                    {
                        types.push(row.card_type);
                        shorter_here = true;
                    }
                }
                shorter_found |= shorter_here;
            }
            types
        };
        let mut prefixes = std::collections::BTreeSet::new();
        for ((bin_len, _), &(start, end)) in d.by_len.iter().zip(&d.len_spans) {
            for &bin in &d.bin_values[start..end] {
                let text = format!("{bin:0width$}", width = *bin_len);
                for n in 1..=text.len() {
                    prefixes.insert(text[..n].to_owned());
                    let above = text[..n].parse::<u64>().unwrap() + 1;
                    prefixes.insert(format!("{above:0n$}"));
                }
            }
        }
        let mut checked = 0;
        for prefix in prefixes.iter().filter(|p| p.len() <= BIN_LEN_MAX) {
            for pan_len in PAN_LEN_MIN..=PAN_LEN_MAX {
                let fast = d.card_types_under(prefix, pan_len);
                let slow = walk(prefix, pan_len);
                assert!(
                    fast.iter().all(|t| slow.contains(t)) && slow.iter().all(|t| fast.contains(t)),
                    "{prefix} at {pan_len}: {fast:?} against {slow:?}"
                );
                checked += usize::from(!fast.is_empty());
            }
        }
        assert!(checked > 1_000, "only {checked} prefixes had a type");
    }

    #[test]
    fn embedded_tables_load_whole() {
        let d = dir();
        let expected_rows = EMBEDDED_BIN_CSV
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(d.bin_count(), expected_rows);
        let names = EMBEDDED_BANK_NAMES_CSV
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty());
        assert_eq!(d.banks().len(), names.count());
        let with_contact = d
            .banks()
            .iter()
            .filter(|b| matches!(b.contact(), IssuerContact::Known { .. }))
            .count();
        assert_eq!(with_contact, 20);
        // Every bank with a contact has an English name, and only those.
        for b in d.banks() {
            let known = matches!(b.contact(), IssuerContact::Known { .. });
            assert_eq!(known, b.name_en().is_some(), "{}", b.code());
        }
    }

    #[test]
    fn real_rows_resolve() {
        let d = dir();
        // 356390,CITIC,CC,16 (in the JCB range, but the CUP table knows it)
        let l = d.lookup_digits(&digits("356390", 16));
        let m = l.issuer.unwrap();
        assert_eq!(m.bank.code(), "CITIC");
        assert_eq!(m.bank.name_zh(), "中信银行");
        assert_eq!(m.card_type, CardType::Credit);
        assert!(m.length_matches());
        assert_eq!(l.network, CardNetwork::DomesticCup);
        assert_eq!(
            m.bank.contact(),
            IssuerContact::Known {
                phone: "95558",
                website: "www.citicbank.com"
            }
        );
        // 18572,KMRCU,DC,18: a 5-digit BIN, and a bank with no known contact.
        let m = d.lookup_digits(&digits("18572", 18)).issuer.unwrap();
        assert_eq!(m.bank.code(), "KMRCU");
        assert_eq!(m.bin_len, 5);
        assert_eq!(m.bank.contact(), IssuerContact::NoKnownContact);
        assert_eq!(m.bank.name_en(), None);
        // 103,ABC,DC,19: a 3-digit BIN.
        let m = d.lookup_digits(&digits("103", 19)).issuer.unwrap();
        assert_eq!(
            (m.bank.code(), m.bin_len, m.card_type),
            ("ABC", 3, CardType::Debit)
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let d = dir();
        // 621260001,XFRCB,DC,19 beats 621260,CSRCB,DC,19.
        let m = d.lookup_digits(&digits("621260001", 19)).issuer.unwrap();
        assert_eq!((m.bank.code(), m.bin_len), ("XFRCB", 9));
        // 6229756114,QDRCB,DC,19: a 10-digit BIN.
        let m = d.lookup_digits(&digits("6229756114", 19)).issuer.unwrap();
        assert_eq!((m.bank.code(), m.bin_len), ("QDRCB", 10));
    }

    #[test]
    fn pan_length_picks_between_rows_of_one_bin() {
        let d = dir();
        // 621260,SPABANK,CC,16 and 621260,CSRCB,DC,19
        let m = d.lookup_digits(&digits("6212609", 16)).issuer.unwrap();
        assert_eq!((m.bank.code(), m.card_type), ("SPABANK", CardType::Credit));
        let m = d.lookup_digits(&digits("6212609", 19)).issuer.unwrap();
        assert_eq!((m.bank.code(), m.card_type), ("CSRCB", CardType::Debit));
        // 690755,CMB,DC,15 and 690755,CMB,DC,18
        assert!(
            d.lookup_digits(&digits("690755", 15))
                .issuer
                .unwrap()
                .length_matches()
        );
        assert!(
            d.lookup_digits(&digits("690755", 18))
                .issuer
                .unwrap()
                .length_matches()
        );
    }

    #[test]
    fn length_mismatch_is_reported_not_hidden() {
        let d = dir();
        // 356390 is issued at 16 digits only.
        let m = d.lookup_digits(&digits("356390", 19)).issuer.unwrap();
        assert_eq!(m.bank.code(), "CITIC");
        assert_eq!((m.expected_pan_len, m.pan_len), (16, 19));
        assert!(!m.length_matches());
    }

    #[test]
    fn foreign_and_unknown_cards() {
        let d = dir();
        let l = d.lookup_digits("4111111111111111");
        assert!(l.issuer.is_none());
        assert_eq!(l.network, CardNetwork::Visa);
        assert_eq!(
            d.lookup_digits(&digits("2221", 16)).network,
            CardNetwork::Mastercard
        );
        assert_eq!(
            d.lookup_digits(&digits("3530", 16)).network,
            CardNetwork::Jcb
        );
        assert_eq!(
            d.lookup_digits(&digits("34", 15)).network,
            CardNetwork::Amex
        );
        // 62 but no CUP row: a domestic card of a bank the table lacks.
        let l = d.lookup_digits(&digits("629999", 16));
        assert!(l.issuer.is_none());
        assert_eq!(l.network, CardNetwork::DomesticCup);
        assert_eq!(d.lookup_digits("7999999999999").network, CardNetwork::Other);
        // 999999,HXBANK,DC,16: a 13-digit number under it is HXBANK's, flagged as wrong length.
        let m = d.lookup_digits("9999999999999").issuer.unwrap();
        assert_eq!((m.bank.code(), m.length_matches()), ("HXBANK", false));
        assert!(d.lookup_digits("62220x0000000000").issuer.is_none());
        assert!(d.lookup_digits("").issuer.is_none());
    }

    #[test]
    fn a_bin_never_covers_the_whole_number() {
        let d = dir();
        // "103" itself is not a card; a 3-digit input must not match the 3-digit BIN.
        assert!(d.lookup_digits("103").issuer.is_none());
    }

    #[test]
    fn a_stored_bin_names_the_bank_its_cards_are_from() {
        let d = dir();
        let bank = |prefix: &str, len| {
            d.lookup_prefix(prefix, len)
                .issuer
                .map(|m| m.bank.code().to_owned())
        };
        // A 6-digit BIN with 8-digit BINs of other banks under it: the 6-digit one's bank,
        // not the one whose BIN happens to continue with zeros.
        assert_eq!(bank("603265", 16).as_deref(), Some("JSBANK"));
        assert_eq!(bank("621059", 16).as_deref(), Some("JRCB"));
        assert_eq!(
            d.lookup_digits("6032650000000000")
                .issuer
                .map(|m| m.bank.code()),
            Some("WXCCB"),
            "the padded lookup this replaces"
        );
        // A 7-digit BIN with nothing shorter above it: its bank, and a domestic card.
        let under = d.lookup_prefix("688659", 18);
        assert_eq!(under.network, CardNetwork::DomesticCup);
        assert_eq!(under.issuer.map(|m| m.bank.code()), Some("XMCCB"));
        // A whole card number is looked up as it is.
        assert_eq!(bank("6222020200112345679", 19).as_deref(), Some("ICBC"));
        // Nothing known: not a domestic card.
        assert!(d.lookup_prefix("411111", 16).issuer.is_none());
    }

    #[test]
    fn lookup_through_pan() {
        let d = dir();
        let pan: Pan = "6222020200112345679".parse().unwrap();
        let l = d.lookup(&pan);
        let m = l.issuer.unwrap();
        assert_eq!(m.bank.code(), "ICBC");
        assert_eq!(
            m.bank.name_en(),
            Some("Industrial and Commercial Bank of China")
        );
    }

    #[test]
    fn operator_tables_load_and_errors_name_the_line() {
        let names = "\u{feff}bank,name\r\nXB,示例银行\r\n\r\nYB,另一银行\r\n";
        let bins = "bin,bank,type,length\n123456,XB,DC,16\n12345678,YB,PC,19\n";
        let contacts = "bank,service_phone,website\nXB,95000,www.example.cn\n";
        let d = IssuerDirectory::from_csv(bins, names, contacts).unwrap();
        let m = d.lookup_digits(&digits("12345678", 19)).issuer.unwrap();
        assert_eq!((m.bank.code(), m.card_type), ("YB", CardType::Prepaid));
        assert_eq!(d.bank("XB").unwrap().name_zh(), "示例银行");

        let cases: [(&str, &str, &str, CsvFile, usize, RowProblem); 12] = [
            (
                "bin,bank\n",
                names,
                contacts,
                CsvFile::Bins,
                1,
                RowProblem::Header {
                    expected: BIN_HEADER,
                },
            ),
            (
                "",
                names,
                contacts,
                CsvFile::Bins,
                1,
                RowProblem::Header {
                    expected: BIN_HEADER,
                },
            ),
            (
                "bin,bank,type,length\n\n12345,ZB,DC,16\n",
                names,
                contacts,
                CsvFile::Bins,
                3,
                RowProblem::UnknownBank("ZB".into()),
            ),
            (
                "bin,bank,type,length\n12,XB,DC,16\n",
                names,
                contacts,
                CsvFile::Bins,
                2,
                RowProblem::Bin,
            ),
            (
                "bin,bank,type,length\n12345678901,XB,DC,16\n",
                names,
                contacts,
                CsvFile::Bins,
                2,
                RowProblem::Bin,
            ),
            (
                "bin,bank,type,length\n12a45,XB,DC,16\n",
                names,
                contacts,
                CsvFile::Bins,
                2,
                RowProblem::Bin,
            ),
            (
                "bin,bank,type,length\n12345,XB,XC,16\n",
                names,
                contacts,
                CsvFile::Bins,
                2,
                RowProblem::CardType("XC".into()),
            ),
            (
                "bin,bank,type,length\n12345,XB,DC,20\n",
                names,
                contacts,
                CsvFile::Bins,
                2,
                RowProblem::PanLength("20".into()),
            ),
            (
                "bin,bank,type,length\n12345,XB,DC,16\n12345,YB,CC,16\n",
                names,
                contacts,
                CsvFile::Bins,
                3,
                RowProblem::DuplicateBin { first_line: 2 },
            ),
            (
                "bin,bank,type,length\n12345,XB,DC\n",
                names,
                contacts,
                CsvFile::Bins,
                2,
                RowProblem::Columns {
                    expected: 4,
                    got: 3,
                },
            ),
            (
                bins,
                "bank,name\nXB,甲\nXB,乙\n",
                contacts,
                CsvFile::BankNames,
                3,
                RowProblem::DuplicateBank {
                    code: "XB".into(),
                    first_line: 2,
                },
            ),
            (
                bins,
                names,
                "bank,service_phone,website\nQQ,1,x\n",
                CsvFile::Contacts,
                2,
                RowProblem::UnknownBank("QQ".into()),
            ),
        ];
        for (bins, names, contacts, file, line, problem) in cases {
            let err = IssuerDirectory::from_csv(bins, names, contacts).unwrap_err();
            assert_eq!(
                err,
                DirectoryError {
                    file,
                    line,
                    problem
                },
                "{bins:?}"
            );
        }
        let err =
            IssuerDirectory::from_csv("bin,bank,type,length\n\"1\",XB,DC,16\n", names, contacts)
                .unwrap_err();
        assert_eq!(err.problem, RowProblem::Quoted);
        let err =
            IssuerDirectory::from_csv("bin,bank,type,length\n12345,,DC,16\n", names, contacts)
                .unwrap_err();
        assert_eq!(err.problem, RowProblem::Empty { column: "bank" });
        assert_eq!(err.to_string(), "bin.csv line 2: column `bank` is empty");
    }
}
