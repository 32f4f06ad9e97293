//! `shoudan crypto` run as a real binary: check values, MACs and PIN blocks against published and
//! independently computed answers, field 62 diagnosis, and that nothing secret is printed.
#![cfg(test)]

mod cli;

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoudan"))
        .arg("crypto")
        .args(args)
        .output()
        .unwrap()
}

/// Runs `shoudan crypto ARGS` with `input` on its standard input.
fn run_with_stdin(args: &[&str], input: &str) -> Output {
    cli::run_with_stdin(&[&["crypto"], args].concat(), input)
}

/// Runs a command that must succeed; returns its standard output.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Runs a command that must fail with exit 2; returns (stdout, stderr).
fn fails(args: &[&str]) -> (String, String) {
    let out = run(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn sample(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/cup-samples")
        .join(name);
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn kcv_of_des_3des_and_sm4_keys() {
    // KCVs cross-checked with pycryptodome / gmssl (paycrypto/tests/vectors).
    let out = ok(&["kcv", "--key", "906E8C867D1E9B3F"]);
    assert!(out.contains("KCV:  03542466"), "{out}");
    assert!(out.contains("single-length DES"), "{out}");
    let out = ok(&[
        "kcv",
        "--key",
        "92CB3B2DBD5720BA 4806E8A997E2A670",
        "--alg",
        "des",
    ]);
    assert!(out.contains("KCV:  88780DF9"), "{out}");
    // A 16-byte key without --alg gets both answers, labelled.
    let out = ok(&["kcv", "--key", "7D1D4BB4224D7DF77118D89C839FEAE0"]);
    assert!(out.contains("KCV 3DES:"), "{out}");
    assert!(out.contains("KCV SM4:   B5285"), "{out}");
    // Never echoes the key.
    assert!(!out.contains("7D1D4BB4"), "{out}");
}

#[test]
fn kcv_rejects_bad_keys_with_one_line() {
    let (_, err) = fails(&["kcv", "--key", "0123"]);
    assert_eq!(
        err.trim(),
        "error: --key: a DES/3DES key must be 8, 16 or 24 bytes, this one is 2"
    );
    let (_, err) = fails(&["kcv", "--key", "0123456789ABCDEG"]);
    assert!(err.contains("not a hex digit at position 15"), "{err}");
    let (_, err) = fails(&["kcv", "--key", "0123456789ABCDEF", "--alg", "sm4"]);
    assert!(err.contains("SM4 key must be 16 bytes"), "{err}");
}

#[test]
fn mac_matches_independent_vectors() {
    let data = "3D7F0E342DF4FC0739B2E65E7A4DBA8BA8";
    for (alg, key, mac) in [
        ("cup-ecb", "6CC2ED15CEA1CB6F", "3744394336453431"),
        (
            "cup-ecb",
            "B54D97F197956CADD6C4EC819B3A7BAF",
            "3636463938374641",
        ),
        ("x919", "6D8CBAE51E67C823", "2CE291B76789C1CE"),
        (
            "x919",
            "4A7D85252CF014484AA4C1306FDA44D6",
            "59E82AE125C9C0EC",
        ),
        (
            "sm4",
            "05E0B0414B3964E79AE030B97E51E48B",
            "3842344234364646",
        ),
    ] {
        let out = ok(&["mac", "--alg", alg, "--key", key, "--data", data]);
        assert!(out.contains(&format!("MAC:        {mac}")), "{alg}: {out}");
        let out = ok(&[
            "mac", "--alg", alg, "--key", key, "--data", data, "--expect", mac,
        ]);
        assert!(out.contains("MATCH"), "{out}");
    }
}

#[test]
fn mac_known_answer_x99_and_ascii_display() {
    // FIPS 113 / ANSI X9.9 example, first 4 bytes F1D30F68.
    let data = "37363534333231204E6F77206973207468652074696D6520666F7220";
    let out = ok(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "0123456789ABCDEF",
        "--data",
        data,
    ]);
    assert!(out.contains("MAC:        F1D30F68"), "{out}");
    assert!(out.contains("ANSI X9.9"), "{out}");
    assert!(
        out.contains("28 bytes, 4 blocks of 8, zero-padded"),
        "{out}"
    );
    let out = ok(&[
        "mac",
        "--alg",
        "cup-ecb",
        "--key",
        "6CC2ED15CEA1CB6F",
        "--data",
        "3D7F0E342DF4FC0739B2E65E7A4DBA8BA8",
    ]);
    assert!(out.contains("(ASCII \"7D9C6E41\")"), "{out}");
}

#[test]
fn mac_mismatch_explains_and_exits_non_zero() {
    let (out, err) = fails(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "6D8CBAE51E67C823",
        "--data",
        "3D7F0E342DF4FC0739B2E65E7A4DBA8BA8",
        "--expect",
        "2CE291B76789C1CF",
    ]);
    assert!(out.contains("MISMATCH"), "{out}");
    assert!(out.contains("MAC:        2CE291B76789C1CE"), "{out}");
    assert!(out.contains("hint:"), "{out}");
    assert_eq!(err.trim(), "error: MAC does not match");
    let (_, err) = fails(&[
        "mac",
        "--alg",
        "sm4",
        "--key",
        "0123456789ABCDEF",
        "--data",
        "00",
    ]);
    assert!(err.contains("--key: a SM4 key must be 16 bytes"), "{err}");
    let (_, err) = fails(&[
        "mac",
        "--alg",
        "cbc",
        "--key",
        "0123456789ABCDEF",
        "--data",
        "00",
    ]);
    assert!(err.contains("expected cup-ecb, x919 or sm4"), "{err}");
}

/// `--expect` takes the 8 ASCII characters the command shows for cup-ecb and sm4 as well as the
/// 16 hex digits of field 64, and a MAC of the wrong length is refused before any comparison.
#[test]
fn mac_expect_takes_the_ascii_form_and_checks_the_length_first() {
    let data = "3D7F0E342DF4FC0739B2E65E7A4DBA8BA8";
    let cup = [
        "mac",
        "--alg",
        "cup-ecb",
        "--key",
        "6CC2ED15CEA1CB6F",
        "--data",
        data,
    ];
    for expect in ["7D9C6E41", "7d9c6e41", "3744394336453431"] {
        let out = ok(&[&cup[..], &["--expect", expect]].concat());
        assert!(out.contains("result:     MATCH"), "{expect}: {out}");
        assert!(
            out.contains("expected:   3744394336453431  (ASCII \"7D9C6E41\")"),
            "{expect}: {out}"
        );
    }
    let out = ok(&[
        "mac",
        "--alg",
        "sm4",
        "--key",
        "05E0B0414B3964E79AE030B97E51E48B",
        "--data",
        data,
        "--expect",
        "8B4B46FF",
    ]);
    assert!(out.contains("result:     MATCH"), "{out}");
    // The ASCII form of another MAC: a mismatch, as ever.
    let (out, err) = fails(&[&cup[..], &["--expect", "7D9C6E42"]].concat());
    assert!(out.contains("result:     MISMATCH"), "{out}");
    assert_eq!(err.trim(), "error: MAC does not match");
    // Wrong lengths: the MAC computed is shown, no verdict, and the error says what to give.
    let (out, err) = fails(&[&cup[..], &["--expect", "7D9C6E4100"]].concat());
    assert!(out.contains("MAC:        3744394336453431"), "{out}");
    assert!(
        !out.contains("MISMATCH") && !out.contains("expected:"),
        "{out}"
    );
    assert_eq!(
        err.trim(),
        "error: --expect: a MAC is 8 bytes, given for cup-ecb as 16 hex digits, or the 8 \
         characters of its ASCII form; this one is 10 characters"
    );
    // An X9.19 MAC is binary: 8 hex digits are half of one.
    let (out, err) = fails(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "6D8CBAE51E67C823",
        "--data",
        data,
        "--expect",
        "2CE291B7",
    ]);
    assert!(!out.contains("MISMATCH"), "{out}");
    assert_eq!(
        err.trim(),
        "error: --expect: a MAC is 8 bytes, given for x919 as 16 hex digits; this one is 8 \
         characters"
    );
}

/// An error in the data of `--data-file` names that option and the file, not `--data`.
#[test]
fn a_bad_data_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mab.hex");
    std::fs::write(&path, "3D7F0E342DF4FC0739B2E65E7A4DBA8BAZ\n").unwrap();
    let path = path.to_str().unwrap();
    let (_, err) = fails(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "6D8CBAE51E67C823",
        "--data-file",
        path,
    ]);
    assert_eq!(
        err.trim(),
        format!("error: --data-file {path}: not a hex digit at position 33")
    );
    // Given inline, the same data is `--data`'s.
    let (_, err) = fails(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "6D8CBAE51E67C823",
        "--data",
        "3D7F0E342DF4FC0739B2E65E7A4DBA8BAZ",
    ]);
    assert_eq!(err.trim(), "error: --data: not a hex digit at position 33");
}

#[test]
fn mac_over_a_sample_file() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/cup-samples/chfenix_0200_purchase_mab.hex");
    let from_file = ok(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "0123456789ABCDEFFEDCBA9876543210",
        "--data-file",
        path.to_str().unwrap(),
    ]);
    let inline = ok(&[
        "mac",
        "--alg",
        "x919",
        "--key",
        "0123456789ABCDEFFEDCBA9876543210",
        "--data",
        &sample("chfenix_0200_purchase_mab.hex"),
    ]);
    assert_eq!(from_file, inline);
}

#[test]
fn pinblock_protocol_known_answers() {
    let out = ok(&[
        "pinblock",
        "--clear",
        "--pin",
        "123456",
        "--pan",
        "1234567890123456",
    ]);
    assert!(out.contains("clear block:  0612713176FEDCBA"), "{out}");
    assert!(out.contains("PAN:          123456******3456"), "{out}");
    assert!(!out.contains("1234567890123456"), "full PAN printed: {out}");
    let out = ok(&[
        "pinblock",
        "--clear",
        "--pin",
        "123456",
        "--pan",
        "123456789012345678",
    ]);
    assert!(out.contains("clear block:  061253DFFEDCBA98"), "{out}");
    // Track 2 as the PAN source; only the masked card number is shown.
    let out = ok(&[
        "pinblock",
        "--clear",
        "--pin",
        "123456",
        "--pan",
        "1234567890123456=25121011234",
    ]);
    assert!(out.contains("clear block:  0612713176FEDCBA"), "{out}");
    assert!(!out.contains("2512101"), "{out}");
}

/// `-` reads the card number and the PIN from standard input, so neither is on the command line
/// (shell history, the process list): the same blocks as given inline, neither value printed.
#[test]
fn pinblock_reads_the_card_and_the_pin_from_standard_input() {
    let inline = ok(&[
        "pinblock",
        "--clear",
        "--pin",
        "9087",
        "--pan",
        "6222020200001234563",
    ]);
    let both = run_with_stdin(
        &["pinblock", "--clear", "--pin", "-", "--pan", "-"],
        "6222020200001234563\n9087\n",
    );
    assert!(both.status.success(), "{both:?}");
    assert_eq!(String::from_utf8(both.stdout).unwrap(), inline);
    let pin_only = run_with_stdin(
        &[
            "pinblock",
            "--clear",
            "--pin",
            "-",
            "--pan",
            "6222020200001234563",
        ],
        "9087\n",
    );
    assert_eq!(String::from_utf8(pin_only.stdout).unwrap(), inline);
    assert!(!inline.contains("9087"), "PIN printed: {inline}");
    assert!(
        !inline.contains("6222020200001234563"),
        "PAN printed: {inline}"
    );
    // Nothing on standard input: a clear error, no block.
    let empty = run_with_stdin(&["pinblock", "--clear", "--pin", "-", "--pan", "-"], "");
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    let stderr = String::from_utf8(empty.stderr).unwrap();
    assert!(stderr.contains("--pan"), "{stderr}");
}

/// `--key -` (and `--tmk -`) read the clear key from standard input, so it is never on the
/// command line: the same answers as the key given inline.
#[test]
fn clear_keys_are_read_from_standard_input() {
    let stdout = |args: &[&str], input: &str| {
        let out = run_with_stdin(args, input);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let key = "D8673F340DC9C40C54AA2B7FC79DE11D";
    assert_eq!(
        stdout(&["kcv", "--key", "-"], &format!("{key}\n")),
        ok(&["kcv", "--key", key])
    );
    let mac = [
        "mac",
        "--alg",
        "x919",
        "--data",
        "3D7F0E342DF4FC0739B2E65E7A4DBA8BA8",
    ];
    assert_eq!(
        stdout(&[&mac[..], &["--key", "-"]].concat(), "6D8CBAE51E67C823\n"),
        ok(&[&mac[..], &["--key", "6D8CBAE51E67C823"]].concat())
    );
    // Card number, PIN and key on three lines, in that order.
    let out = stdout(
        &["pinblock", "--pin", "-", "--pan", "-", "--key", "-"],
        &format!("7104127790457270\n7462\n{key}\n"),
    );
    assert!(out.contains("PIN block:    15BA4381ACF3FAFD"), "{out}");
    assert!(!out.contains(key), "{out}");
    let out = stdout(
        &[
            "keys62",
            "--scheme",
            "001",
            "--hex",
            "EDD0EC92AE34CB2AF92C76F84D3403CF84BF4C19AEAD47AF",
            "--tmk",
            "-",
        ],
        "EBD069558F0F0B09\n",
    );
    assert!(out.contains("all check values match"), "{out}");
    // Nothing on standard input: a clear one-line error naming the option.
    let empty = run_with_stdin(&["kcv", "--key", "-"], "");
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    assert!(String::from_utf8(empty.stderr).unwrap().contains("--key"));
}

#[test]
fn pinblock_encrypted_matches_independent_vectors() {
    let out = ok(&[
        "pinblock",
        "--pin",
        "7462",
        "--pan",
        "7104127790457270",
        "--key",
        "D8673F340DC9C40C54AA2B7FC79DE11D",
    ]);
    assert!(out.contains("PIN block:    15BA4381ACF3FAFD"), "{out}");
    assert!(
        !out.contains("047423D886FBA8D8"),
        "clear block printed with a key: {out}"
    );
    let out = ok(&[
        "pinblock",
        "--pin",
        "7462",
        "--pan",
        "7104127790457270",
        "--key",
        "CFC85077BE973963",
    ]);
    assert!(out.contains("PIN block:    C39A3898C980A468"), "{out}");
    let out = ok(&[
        "pinblock",
        "--pin",
        "7462",
        "--pan",
        "7104127790457270",
        "--alg",
        "sm4",
        "--key",
        "CF1CFE2D1E163B41033122BF92718303",
    ]);
    assert!(
        out.contains("PIN block:    B7694F529F958E5D06FC136518D3E1F9"),
        "{out}"
    );
    let out = ok(&[
        "pinblock",
        "--pin",
        "7462",
        "--pan",
        "7104127790457270",
        "--alg",
        "sm4",
        "--clear",
    ]);
    assert!(
        out.contains("clear block:  047462FFFFFFFFFFFFFFBED886FBA8D8"),
        "{out}"
    );
}

/// A clear PIN block shows its PIN: printed only when asked for by name (`--clear`), never by
/// default, and never beside an encrypted one.
#[test]
fn a_clear_pin_block_is_printed_only_when_asked_for() {
    let (out, err) = fails(&["pinblock", "--pin", "123456", "--pan", "1234567890123456"]);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("--key") && err.contains("--clear"), "{err}");
    assert!(
        !err.contains("0612713176FEDCBA") && !err.contains("123456 "),
        "{err}"
    );
    let (out, err) = fails(&[
        "pinblock",
        "--clear",
        "--key",
        "D8673F340DC9C40C54AA2B7FC79DE11D",
        "--pin",
        "7462",
        "--pan",
        "7104127790457270",
    ]);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("--clear") && err.contains("--key"), "{err}");
}

#[test]
fn pinblock_input_errors() {
    let (_, err) = fails(&[
        "pinblock",
        "--clear",
        "--pin",
        "12",
        "--pan",
        "1234567890123456",
    ]);
    assert!(err.contains("a PIN is 4 to 12 decimal digits"), "{err}");
    let (_, err) = fails(&["pinblock", "--clear", "--pin", "1234", "--pan", "12345"]);
    assert!(err.contains("--pan"), "{err}");
}

#[test]
fn keys62_all_ok_for_each_scheme() {
    // Field 62 built by the Python generator with pycryptodome / gmssl.
    for (scheme, tmk, field, kcvs) in [
        (
            "001",
            "EBD069558F0F0B09",
            "EDD0EC92AE34CB2AF92C76F84D3403CF84BF4C19AEAD47AF",
            &["F92C76F8", "AEAD47AF"][..],
        ),
        (
            "003",
            "FA84C80C5F02552DFBD726EC0C151AB5",
            "97B0991ACD307DF155F0AB52684658AE999A068B0C306B9955AE29744291AE5612ED8653E9B2AF9D",
            &["999A068B", "E9B2AF9D"],
        ),
        (
            "004",
            "6FD6E3ABEECDC3FDABEE9FE32A3A9F8B303DAA9CFE2BCAB5",
            "15EDA0ED1ABE2F8A4FF7DE98D93539BA9DC7FAD0BDE07EE77A6BF4C55843A880EEFD929E6DFD2F19743B0EECDCB5D662131068968F56BE0F9C38BFDF",
            &["9DC7FAD0", "6DFD2F19", "9C38BFDF"],
        ),
        (
            "006",
            "7E76FFFDFE2DECACBFC847FC9FBFD774",
            "6D3A5E8BCF12263F3AC619D8DA6A68FE08FCEB704CCDF36411E74EBDC0AEB8D1193D8E969BB9DE479C7F0BBB5BC269785C68DF717076D3CF72B72CA4",
            &["08FCEB70", "9BB9DE47", "72B72CA4"],
        ),
    ] {
        let out = ok(&["keys62", "--tmk", tmk, "--scheme", scheme, "--hex", field]);
        assert_eq!(out.matches(" OK").count(), kcvs.len(), "{scheme}: {out}");
        for kcv in kcvs {
            assert!(
                out.contains(&format!("received {kcv}  computed {kcv}  OK")),
                "{scheme}: {out}"
            );
        }
        assert!(out.contains("all check values match"), "{out}");
        assert!(!out.contains(tmk), "TMK printed: {out}");
    }
}

#[test]
fn keys62_single_length_mak_with_lll_prefix() {
    let field =
        "0040F9F56594FECB8C9932B6034D9D5B7E9CE48C56CA70F9AE4CF83107CD00000000000000008E4CC5D1";
    let out = ok(&[
        "keys62",
        "--tmk",
        "722679F4F8DE4E0CEC8D47A76AE1C0C0",
        "--scheme",
        "003",
        "--hex",
        field,
    ]);
    assert!(out.contains("after its LLL prefix"), "{out}");
    assert!(
        out.contains("MAK:      single-length DES (8 key bytes + 8 zero bytes)"),
        "{out}"
    );
    assert!(out.contains("computed 8E4CC5D1  OK"), "{out}");
}

#[test]
fn keys62_names_the_failing_key() {
    // MAK check value altered: only MAK fails, and the hint says the TMK is right.
    let field = "97B0991ACD307DF155F0AB52684658AE999A068B0C306B9955AE29744291AE5612ED8653E9B2AF9E";
    let (out, err) = fails(&[
        "keys62",
        "--tmk",
        "FA84C80C5F02552DFBD726EC0C151AB5",
        "--scheme",
        "003",
        "--hex",
        field,
    ]);
    assert!(
        out.contains("KCV received 999A068B  computed 999A068B  OK"),
        "{out}"
    );
    assert!(
        out.contains("KCV received E9B2AF9E  computed E9B2AF9D  FAILED"),
        "{out}"
    );
    assert!(out.contains("the TMK is right"), "{out}");
    assert!(
        err.trim().starts_with("error: MAK failed the check value"),
        "{err}"
    );
}

#[test]
fn keys62_real_sample_is_40_bytes_and_an_unknown_tmk_fails_every_key() {
    // The sample's TMK is not public: any TMK we try must fail both keys, never pass.
    let message = sample("ajsgn_quickstart_0810_signin_response.hex");
    let field = &message[message.len() - 84..];
    assert!(field.starts_with("0040"));
    let (out, err) = fails(&[
        "keys62",
        "--tmk",
        "0123456789ABCDEFFEDCBA9876543210",
        "--scheme",
        "003",
        "--hex",
        field,
    ]);
    assert!(out.contains("field 62 is 40 bytes"), "{out}");
    assert!(out.contains("PIK") && out.contains("MAK"), "{out}");
    assert_eq!(out.matches("FAILED").count(), 2, "{out}");
    assert!(out.contains("every key failed"), "{out}");
    assert!(err.contains("PIK and MAK failed"), "{err}");
}

#[test]
fn keys62_shape_errors() {
    let (_, err) = fails(&[
        "keys62",
        "--tmk",
        "0123456789ABCDEFFEDCBA9876543210",
        "--scheme",
        "003",
        "--hex",
        "0011",
    ]);
    assert!(err.contains("must be 40 bytes, this one is 2"), "{err}");
    let (_, err) = fails(&[
        "keys62",
        "--tmk",
        "0123456789ABCDEF",
        "--scheme",
        "006",
        "--hex",
        "00",
    ]);
    assert!(err.contains("--tmk"), "{err}");
    let (_, err) = fails(&[
        "keys62",
        "--tmk",
        "0123456789ABCDEF",
        "--scheme",
        "005",
        "--hex",
        "00",
    ]);
    assert!(err.contains("001, 003, 004 or 006"), "{err}");
}
