//! Helpers shared by the integration tests (included with `mod common;`).
#![cfg(test)]

use std::path::PathBuf;

pub fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[allow(dead_code)]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/cup-samples")
}

pub fn sample(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    unhex(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Every sample as a message starting at the MTI (body-only samples get their MTI prepended),
/// with the offset of the MTI in the original file's bytes.
#[allow(dead_code)]
pub fn all_samples() -> Vec<(&'static str, Vec<u8>)> {
    [
        "ajsgn_quickstart_0800_signin_request.hex",
        "ajsgn_quickstart_0810_signin_response.hex",
        "ajsgn_maintest2_0810_signin_response.hex",
        "ajsgn_datetest_0400_reversal.hex",
        "soloicesky_0200_purchase_request_body.hex",
        "soloicesky_0210_purchase_response_body.hex",
        "chfenix_0200_purchase_mab.hex",
        "ajsgn_main_0100_inconsistent.hex",
    ]
    .into_iter()
    .map(|n| (n, sample(n)))
    .collect()
}

/// The names of the sample files on disk (the README aside), sorted: every one must be in
/// `all_samples`, so a sample added to the directory is tested too.
#[allow(dead_code)]
pub fn samples_on_disk() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(samples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hex"))
        .collect();
    names.sort();
    names
}
