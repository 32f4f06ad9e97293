//! `shoudan crypto`: the tools operators use to debug key and MAC problems — check values,
//! MACs, PIN blocks and field 62 working keys. Clear working keys and PINs are never printed,
//! nor a clear PIN block (which shows its PIN) unless asked for by name (`pinblock --clear`).

use std::fmt::Write as _;

use paycrypto::hex;
use paycrypto::{
    ClearPinBlock, DesKey, Field62Keys, Key, KeyAlgorithm, KeyScheme, MAC_LEN, MacAlgorithm,
    PanDigits, Sm4Key, mac, pin, unwrap_field62,
};
use zeroize::Zeroizing;

use crate::CliResult;

type Failure = Box<dyn std::error::Error>;

#[derive(clap::Subcommand)]
pub enum CryptoCmd {
    /// Key check value of a clear key: first 4 bytes of the key encrypting zeros.
    Kcv(KcvArgs),
    /// Compute a field 64 MAC over hex data, or check one with --expect.
    Mac(MacArgs),
    /// Build an ISO 9564 format-0 PIN block, clear or encrypted under --key.
    Pinblock(PinblockArgs),
    /// Decrypt field 62 working keys under a TMK and check each key's KCV.
    Keys62(Keys62Args),
}

/// Cipher family of a key given on the command line.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// DES (8 bytes) or 3DES (16/24 bytes).
    Des,
    Sm4,
}

#[derive(clap::Args)]
pub struct KcvArgs {
    /// Clear key as hex (16, 32 or 48 digits; spaces allowed); `-` reads it from a line of
    /// standard input, so it stays out of the shell history and the process list.
    #[arg(long)]
    pub key: String,
    /// Cipher family; a 16-byte key without it gets both its 3DES and SM4 check values.
    #[arg(long, value_enum)]
    pub alg: Option<Family>,
}

#[derive(clap::Args)]
pub struct MacArgs {
    /// cup-ecb, x919 (X9.9 with a single-length key) or sm4.
    #[arg(long)]
    pub alg: MacAlgorithm,
    /// Clear MAK as hex; `-` reads it from a line of standard input.
    #[arg(long)]
    pub key: String,
    /// MAC input as hex: MTI through the last field before 64 (spaces allowed).
    #[arg(
        long,
        required_unless_present = "data_file",
        conflicts_with = "data_file"
    )]
    pub data: Option<String>,
    /// File holding the MAC input as hex.
    #[arg(long)]
    pub data_file: Option<String>,
    /// MAC received in field 64, as 16 hex digits (or, for cup-ecb and sm4, the 8 characters
    /// of its ASCII form): compare and exit non-zero on mismatch.
    #[arg(long)]
    pub expect: Option<String>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("block").required(true).args(["key", "clear"])))]
pub struct PinblockArgs {
    /// The PIN, 4 to 12 digits; `-` reads it from a line of standard input (after the card
    /// number's, if that is `-` too), so it stays out of the shell history and the process list.
    #[arg(long)]
    pub pin: String,
    /// Card number, or track 2 data (the card number is what precedes '=' or 'D'); `-` reads it
    /// from the first line of standard input.
    #[arg(long)]
    pub pan: String,
    /// PIK or ZPK as hex: print the block encrypted under it; `-` reads it from the line of
    /// standard input after the card number's and the PIN's.
    #[arg(long)]
    pub key: Option<String>,
    /// Print the block in clear instead. It shows the PIN to whoever reads the output (a
    /// ticket, a terminal's scrollback): for test cards only.
    #[arg(long)]
    pub clear: bool,
    /// Key family: sm4 uses the 16-byte SM4 layout (scheme 006).
    #[arg(long, value_enum, default_value = "des")]
    pub alg: Family,
}

#[derive(clap::Args)]
pub struct Keys62Args {
    /// The terminal master key as hex (3DES for 001/003/004, SM4 for 006); `-` reads it from
    /// a line of standard input.
    #[arg(long)]
    pub tmk: String,
    /// Key scheme from 60.3 of the sign-in: 001, 003, 004 or 006.
    #[arg(long)]
    pub scheme: KeyScheme,
    /// Field 62 as hex (its LLL length prefix may be included).
    #[arg(long)]
    pub hex: String,
}

pub fn run(cmd: CryptoCmd) -> CliResult {
    let report = match cmd {
        CryptoCmd::Kcv(args) => kcv(&args),
        CryptoCmd::Mac(args) => mac_cmd(&args),
        CryptoCmd::Pinblock(args) => pinblock(&args),
        CryptoCmd::Keys62(args) => keys62(&args),
    };
    // A failed check still prints what was found before the one-line error.
    let (text, result) = match report {
        Ok(text) => (text, Ok(())),
        Err(Report { text, error }) => (text, Err(error)),
    };
    print!("{text}");
    result
}

/// What a command found, and the error that makes it exit non-zero.
struct Report {
    text: String,
    error: Failure,
}

impl<E: Into<Failure>> From<E> for Report {
    fn from(error: E) -> Self {
        Self {
            text: String::new(),
            error: error.into(),
        }
    }
}

/// Hex typed or pasted by a person: spaces, tabs, newlines and colons are ignored.
fn compact(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect()
}

fn parse_key(family: Family, text: &str) -> Result<Key, paycrypto::KeyError> {
    let text = Zeroizing::new(compact(text));
    match family {
        Family::Des => DesKey::from_hex(&text).map(Key::Des),
        Family::Sm4 => Sm4Key::from_hex(&text).map(Key::Sm4),
    }
}

fn describe(key: &Key) -> String {
    match key {
        Key::Des(k) => format!("{}, {} bytes", k.length(), k.length().bytes()),
        Key::Sm4(_) => "SM4, 16 bytes".to_string(),
    }
}

fn kcv(args: &KcvArgs) -> Result<String, Report> {
    let mut out = String::new();
    let given = given_or_line(&args.key, "--key")?;
    let digits = Zeroizing::new(compact(&given));
    let both = args.alg.is_none() && hex::decoded_len(&digits) == Ok(16);
    if both {
        let des = parse_key(Family::Des, &digits)?;
        let sm4 = parse_key(Family::Sm4, &digits)?;
        writeln!(
            out,
            "key:       16 bytes (3DES or SM4: say which with --alg)"
        )?;
        writeln!(out, "KCV 3DES:  {}   (schemes 001/003/004)", des.kcv())?;
        writeln!(out, "KCV SM4:   {}   (scheme 006)", sm4.kcv())?;
        return Ok(out);
    }
    let key =
        parse_key(args.alg.unwrap_or(Family::Des), &digits).map_err(|e| format!("--key: {e}"))?;
    writeln!(out, "key:  {}", describe(&key))?;
    if let Key::Des(k) = &key {
        let parity = if k.has_odd_parity() {
            "yes"
        } else {
            "no (accepted: parity is not checked)"
        };
        writeln!(out, "odd parity:  {parity}")?;
    }
    writeln!(out, "KCV:  {}", key.kcv())?;
    Ok(out)
}

fn mac_cmd(args: &MacArgs) -> Result<String, Report> {
    let family = match args.alg.key_algorithm() {
        KeyAlgorithm::Des => Family::Des,
        KeyAlgorithm::Sm4 => Family::Sm4,
    };
    let given = given_or_line(&args.key, "--key")?;
    let key = parse_key(family, &given).map_err(|err| format!("--key: {err}"))?;
    // An error in the data names the option it came from: a file's is not `--data`'s.
    let (data_text, source) = match (&args.data, &args.data_file) {
        (Some(data), _) => (data.clone(), "--data".to_owned()),
        (None, Some(path)) => (
            std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"))?,
            format!("--data-file {path}"),
        ),
        (None, None) => return Err("give --data or --data-file".into()),
    };
    let data = hex::decode(&compact(&data_text)).map_err(|err| format!("{source}: {err}"))?;
    let mac = mac::compute(args.alg, &key, &data)?;
    let block = match args.alg {
        MacAlgorithm::CupEcb | MacAlgorithm::X919 => 8,
        MacAlgorithm::Sm4 => 16,
    };
    let mut out = String::new();
    let name = match (args.alg, &key) {
        (MacAlgorithm::X919, Key::Des(k)) if k.length() == paycrypto::DesKeyLength::Single => {
            "x919 (single-length key: ANSI X9.9)"
        }
        (MacAlgorithm::X919, _) => "x919 (ANSI X9.19 retail MAC)",
        (MacAlgorithm::CupEcb, _) => "cup-ecb",
        (MacAlgorithm::Sm4, _) => "sm4 (16-byte fold)",
    };
    writeln!(out, "algorithm:  {name}")?;
    writeln!(out, "key:        {}, KCV {}", describe(&key), key.kcv())?;
    let blocks = data.len().div_ceil(block).max(1);
    let plural = if blocks == 1 { "" } else { "s" };
    let padded = if data.len() % block == 0 && !data.is_empty() {
        ""
    } else {
        ", zero-padded"
    };
    writeln!(
        out,
        "data:       {} bytes, {blocks} block{plural} of {block}{padded}",
        data.len()
    )?;
    writeln!(out, "MAC:        {}{}", hex::encode(&mac), ascii_note(&mac))?;
    let Some(expect) = &args.expect else {
        return Ok(out);
    };
    let expected = match expected_mac(args.alg, expect) {
        Ok(expected) => expected,
        // The MAC computed is still shown: it is what the operator compares by eye next.
        Err(error) => {
            return Err(Report {
                text: out,
                error: error.into(),
            });
        }
    };
    let verdict = mac::verify(args.alg, &key, &data, &expected);
    writeln!(
        out,
        "expected:   {}{}",
        hex::encode(&expected),
        ascii_note(&expected)
    )?;
    match verdict {
        Ok(()) => {
            writeln!(out, "result:     MATCH")?;
            Ok(out)
        }
        Err(err) => {
            writeln!(out, "result:     MISMATCH")?;
            writeln!(
                out,
                "hint:       check the MAK (compare its KCV with the terminal's), the algorithm, \
                 and that the data runs from the MTI to the field before 64"
            )?;
            Err(Report {
                text: out,
                error: err.into(),
            })
        }
    }
}

/// The MAC `--expect` gives: 16 hex digits (field 64's 8 bytes, as `iso decode` shows them), or
/// for cup-ecb and sm4, whose MAC is 8 ASCII hex characters, those characters as this command
/// shows them (`(ASCII "7D9C6E41")`). Its length is checked before anything is compared: read
/// as hex, those 8 characters would make a 4-byte MAC, reported as a mismatch before its length.
fn expected_mac(alg: MacAlgorithm, text: &str) -> Result<[u8; MAC_LEN], String> {
    let text = compact(text);
    let ascii = matches!(alg, MacAlgorithm::CupEcb | MacAlgorithm::Sm4);
    let length = text.chars().count();
    let bytes = if ascii && length == MAC_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Upper case, as the MAC is written: `7d9c6e41` is the MAC shown as `7D9C6E41`.
        text.to_ascii_uppercase().into_bytes()
    } else if length == 2 * MAC_LEN {
        hex::decode(&text).map_err(|err| format!("--expect: {err}"))?
    } else {
        let forms = if ascii {
            "16 hex digits, or the 8 characters of its ASCII form"
        } else {
            "16 hex digits"
        };
        return Err(format!(
            "--expect: a MAC is 8 bytes, given for {alg} as {forms}; this one is {length} \
             characters"
        ));
    };
    <[u8; MAC_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("--expect: a MAC is 8 bytes, this one is {}", bytes.len()))
}

/// CUP ECB and SM4 MACs are ASCII hex characters: show them as the terminal would.
fn ascii_note(bytes: &[u8]) -> String {
    if bytes.iter().all(u8::is_ascii_graphic) {
        format!("  (ASCII \"{}\")", String::from_utf8_lossy(bytes))
    } else {
        String::new()
    }
}

/// Card number as people may see it: first 6 and last 4 digits.
fn masked_pan(pan_or_track: &str) -> String {
    let pan: String = pan_or_track
        .trim_start_matches(';')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let len = pan.chars().count();
    let shown_head = if len >= 13 { 6 } else { 0 };
    pan.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < shown_head || i + 4 >= len {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// `given`, or the next line of standard input if it is `-`; wiped when dropped.
fn given_or_line(given: &str, what: &str) -> Result<Zeroizing<String>, Report> {
    if given != "-" {
        return Ok(Zeroizing::new(given.to_owned()));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("{what}: standard input: {e}"))?;
    Ok(Zeroizing::new(line.trim().to_owned()))
}

fn pinblock(args: &PinblockArgs) -> Result<String, Report> {
    let card = given_or_line(&args.pan, "--pan")?;
    let pin = given_or_line(&args.pin, "--pin")?;
    let pan = PanDigits::from_pan_or_track2(card.trim()).map_err(|e| format!("--pan: {e}"))?;
    let mut out = String::new();
    writeln!(out, "PAN:          {}", masked_pan(card.trim()))?;
    let layout = match args.alg {
        Family::Des => "ISO 9564 format 0 (ANSI X9.8), 8 bytes",
        Family::Sm4 => "SM4 layout: format 0 widened to 16 bytes",
    };
    writeln!(out, "format:       {layout}")?;
    match &args.key {
        None => {
            let block = match args.alg {
                Family::Des => ClearPinBlock::format0(&pin, &pan)?,
                Family::Sm4 => ClearPinBlock::sm4(&pin, &pan)?,
            };
            writeln!(out, "clear block:  {}", hex::encode(block.expose()))?;
        }
        Some(key) => {
            let given = given_or_line(key, "--key")?;
            let key = parse_key(args.alg, &given).map_err(|err| format!("--key: {err}"))?;
            let block = pin::encrypt(&key, &pin, &pan)?;
            writeln!(out, "key:          {}, KCV {}", describe(&key), key.kcv())?;
            writeln!(out, "PIN block:    {}", hex::encode(block.as_bytes()))?;
        }
    }
    Ok(out)
}

/// Field 62 bytes, with a leading LLL prefix (2 bytes BCD) dropped when it states the rest's
/// length and the rest is a valid length for the scheme.
fn field62_bytes(scheme: KeyScheme, text: &str) -> Result<(Vec<u8>, bool), Report> {
    let bytes = hex::decode(&compact(text)).map_err(|err| format!("--hex: {err}"))?;
    if let Some((prefix, rest)) = bytes.split_first_chunk::<2>() {
        let stated = hex::encode(prefix);
        if !scheme.field_lengths().contains(&bytes.len())
            && scheme.field_lengths().contains(&rest.len())
            && stated.parse::<usize>().ok() == Some(rest.len())
        {
            return Ok((rest.to_vec(), true));
        }
    }
    Ok((bytes, false))
}

fn keys62(args: &Keys62Args) -> Result<String, Report> {
    let family = match args.scheme.tmk_algorithm() {
        KeyAlgorithm::Des => Family::Des,
        KeyAlgorithm::Sm4 => Family::Sm4,
    };
    let given = given_or_line(&args.tmk, "--tmk")?;
    let tmk = parse_key(family, &given).map_err(|err| format!("--tmk: {err}"))?;
    let (field, had_prefix) = field62_bytes(args.scheme, &args.hex)?;
    let mut out = String::new();
    writeln!(
        out,
        "scheme:   {} ({}), field 62 is {} bytes{}",
        args.scheme,
        args.scheme.describe(),
        field.len(),
        if had_prefix {
            " after its LLL prefix"
        } else {
            ""
        }
    )?;
    writeln!(out, "TMK:      {}, KCV {}", describe(&tmk), tmk.kcv())?;
    let keys = unwrap_field62(&tmk, args.scheme, &field)?;
    write_slots(&mut out, &keys)?;
    let failed = keys.failed();
    if !failed.any() {
        writeln!(out, "result:   all check values match")?;
        return Ok(out);
    }
    let all_failed = keys.slots().all(|slot| !slot.is_ok());
    let hint = if all_failed {
        "every key failed: the TMK is almost certainly not the one loaded in this terminal"
    } else {
        "the TMK is right (other keys pass): this slot was altered, or its KCV was computed \
         for a different key length"
    };
    writeln!(out, "hint:     {hint}")?;
    Err(Report {
        text: out,
        error: paycrypto::Field62Error::KcvMismatch { failed }.into(),
    })
}

fn write_slots(out: &mut String, keys: &Field62Keys) -> std::fmt::Result {
    for slot in keys.slots() {
        let length = match slot.key() {
            Key::Des(_) if slot.single_length_mak() => {
                "single-length DES (8 key bytes + 8 zero bytes)".to_string()
            }
            Key::Des(k) => k.length().to_string(),
            Key::Sm4(_) => "SM4".to_string(),
        };
        let label = format!("{}:", slot.role());
        let status = if slot.is_ok() { "OK" } else { "FAILED" };
        writeln!(
            out,
            "{label:<10}{length:<48}  KCV received {}  computed {}  {status}",
            slot.received_kcv(),
            slot.computed_kcv(),
        )?;
    }
    Ok(())
}
