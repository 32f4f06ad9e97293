//! `shoudan iso decode` / `encode` run as a real binary on the CUP samples: values, masking of
//! PAN, tracks and PIN blocks, encode as the inverse of decode, and one-line errors with exit 2.
#![cfg(test)]

mod cli;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

fn sample(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/cup-samples")
        .join(name);
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    cli::run_with_stdin(args, stdin.unwrap_or(""))
}

fn decode(args: &[&str], stdin: Option<&str>) -> (Value, String) {
    let mut all = vec!["iso", "decode"];
    all.extend_from_slice(args);
    let out = run(&all, stdin);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_str(&stdout).unwrap(), stdout)
}

fn encode(json: &str) -> String {
    let out = run(&["iso", "encode"], Some(json));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn fail(args: &[&str], stdin: Option<&str>) -> String {
    let out = run(args, stdin);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should fail with exit 2"
    );
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error: {err}");
    assert!(!err.contains("panicked"));
    err.trim_end().to_string()
}

#[test]
fn decodes_signin_request_frame() {
    let hex = sample("ajsgn_quickstart_0800_signin_request.hex");
    let (v, stdout) = decode(&[&hex], None);
    assert_eq!(v["length"], 65);
    assert_eq!(v["tpdu"], "6000000000");
    assert_eq!(v["header"], "602200000000");
    assert_eq!(v["mti"], "0800");
    assert_eq!(v["fields"]["11"], "000172");
    assert_eq!(v["fields"]["41"], "50080001");
    assert_eq!(v["fields"]["42"], "309310083985008");
    assert_eq!(v["fields"]["60"], "00000172003");
    assert_eq!(v["fields"]["63"], "CUP");
    assert_eq!(v["subfields"]["60"]["message_type"], "00");
    assert_eq!(v["subfields"]["60"]["batch"], "000172");
    assert_eq!(v["subfields"]["60"]["network_management_code"], "003");
    assert_eq!(v["kind"], "sign-in (double-length keys)");
    // Fields print in numeric order, not string order.
    assert!(stdout.find("\"11\"").unwrap() < stdout.find("\"60\"").unwrap());
    // No masked field: encode is the exact inverse.
    assert_eq!(encode(&stdout), hex);
}

#[test]
fn decodes_signin_response_with_working_keys_and_encodes_back() {
    for name in [
        "ajsgn_quickstart_0810_signin_response.hex",
        "ajsgn_maintest2_0810_signin_response.hex",
    ] {
        let hex = sample(name);
        let (v, stdout) = decode(&[&hex], None);
        assert_eq!(v["mti"], "0810");
        assert_eq!(v["fields"]["39"], "00");
        assert_eq!(v["subfields"]["62"]["layout"], "double");
        assert_eq!(encode(&stdout), hex, "{name}");
    }
    let (v, _) = decode(&[&sample("ajsgn_maintest2_0810_signin_response.hex")], None);
    assert_eq!(
        v["subfields"]["62"]["mak"]["key"],
        "C0DF5A74CE24FDB00000000000000000"
    );
    assert_eq!(v["subfields"]["62"]["mak"]["kcv"], "DCF475D3");
    assert_eq!(v["fields"]["32"], "48023310");
}

#[test]
fn reversal_from_tpdu_masks_the_pan_and_encodes_with_the_full_one() {
    let hex = sample("ajsgn_datetest_0400_reversal.hex");
    let (v, stdout) = decode(&["--no-length", "-"], Some(&hex));
    assert!(v.get("length").is_none());
    assert_eq!(v["tpdu"], "6010120000");
    assert_eq!(v["fields"]["2"], "123456******3456");
    assert!(!stdout.contains("1234567890123456"));
    assert_eq!(v["fields"]["4"], "000000000500");
    assert_eq!(v["fields"]["39"], "98");
    assert_eq!(v["fields"]["41"], "axtest3-");
    assert_eq!(v["fields"]["64"], "284C79DC9A2E50FC");
    assert_eq!(v["subfields"]["61"]["original_batch"], "233415");
    assert_eq!(v["subfields"]["61"]["original_trace"], "681186");
    assert_eq!(v["subfields"]["61"]["original_date"], "0529");
    // The masked PAN is refused by encode...
    let err = fail(&["iso", "encode"], Some(&stdout));
    assert!(err.contains("field 2") && err.contains("masked"), "{err}");
    // ...and with the full PAN, encode gives the frame back (plus its length prefix).
    let full = stdout.replace("123456******3456", "1234567890123456");
    let encoded = encode(&full);
    assert_eq!(&encoded[..4], format!("{:04X}", hex.len() / 2));
    assert_eq!(&encoded[4..], hex);
}

#[test]
fn body_input_with_track_never_prints_track_data() {
    let hex = sample("soloicesky_0200_purchase_request_body.hex");
    // Whitespace in the hex is fine.
    let spaced: String = hex
        .as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" \n");
    let (v, stdout) = decode(&["--body", "--mti", "0200", "-"], Some(&spaced));
    assert!(v.get("tpdu").is_none());
    assert_eq!(v["mti"], "0200");
    assert_eq!(v["fields"]["35"], "<track 2 data, 37 digits>");
    assert!(
        !stdout.contains("6013822000594988787"),
        "track digits leaked: {stdout}"
    );
    assert_eq!(v["fields"]["53"], "0610000000000000");
    assert_eq!(v["subfields"]["53"]["track_encrypted"], true);
    assert_eq!(v["subfields"]["60"]["extra"], "1");
    assert_eq!(v["kind"], "purchase");
    // With the real track, encode (no tpdu/header) gives MTI + body.
    let full = stdout.replace(
        "<track 2 data, 37 digits>",
        "6013822000594988787DB26C2C1903514D890",
    );
    // We pad track data with F; this terminal padded with 0: the one nibble that differs.
    let canonical = hex.replacen("4D8900313233", "4D890F313233", 1);
    assert_ne!(canonical, hex);
    assert_eq!(encode(&full), format!("0200{canonical}"));
}

#[test]
fn response_body_and_mac_input_block() {
    let (v, stdout) = decode(
        &[
            "--body",
            "--mti",
            "0210",
            &sample("soloicesky_0210_purchase_response_body.hex"),
        ],
        None,
    );
    assert_eq!(v["fields"]["2"], "601382*********8787");
    assert!(!stdout.contains("6013822000594988787"));
    assert_eq!(v["fields"]["44"], "8888888888866666666666");
    assert_eq!(v["fields"]["63"], "CUP");

    let mab = sample("chfenix_0200_purchase_mab.hex");
    let err = fail(&["iso", "decode", "--no-frame", &mab], None);
    assert_eq!(
        err,
        "error: field 64: truncated: 8 bytes needed, 0 left (a MAC input? try --mac-input)"
    );
    let (v, stdout) = decode(&["--no-frame", "--mac-input", &mab], None);
    assert_eq!(v["fields"]["52"], "<PIN block, 8 bytes>");
    assert!(!stdout.contains("3D87C8B8FA17C67C"), "PIN block leaked");
    assert_eq!(v["fields"]["35"], "<track 2 data, 37 digits>");
    assert_eq!(v["subfields"]["53"]["pin_format"], 2);
    assert_eq!(v["subfields"]["60"]["batch"], "001437");
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_2() {
    let err = fail(
        &["iso", "decode", &sample("ajsgn_main_0100_inconsistent.hex")],
        None,
    );
    assert!(err.contains("field 62"), "{err}");
    assert_eq!(
        fail(&["iso", "decode", "zz"], None),
        "error: input: 'z' at 0 is not a hex digit"
    );
    assert_eq!(
        fail(&["iso", "decode", "123"], None),
        "error: input: odd number of hex digits (3)"
    );
    let hex = sample("ajsgn_quickstart_0800_signin_request.hex");
    assert_eq!(
        fail(&["iso", "decode", &hex[..40]], None),
        "error: frame: length prefix says 65 bytes, 18 follow"
    );
    let err = fail(&["iso", "decode", "--body", "--mti", "02x0", "00"], None);
    assert_eq!(err, "error: --mti: an MTI is four decimal digits");
    let err = fail(&["iso", "decode", "-"], Some(""));
    assert_eq!(
        err,
        "error: length prefix: truncated, 2 bytes needed, 0 left"
    );
    let err = fail(
        &["iso", "encode"],
        Some("{\"mti\":\"0200\",\"fields\":{\"35\":\"1234567890123456789=1234567890123456789\"}}"),
    );
    assert_eq!(err, "error: field 35: length 39 exceeds max 37");
    let err = fail(&["iso", "encode"], Some("not json"));
    assert!(err.starts_with("error: input JSON:"), "{err}");
    let err = fail(
        &["iso", "encode"],
        Some("{\"mti\":\"0200\",\"fields\":{\"7\":\"1\"}}"),
    );
    assert_eq!(err, "error: field 7: not defined in this dialect");
    let err = fail(
        &["iso", "encode"],
        Some("{\"mti\":\"0200\",\"tpdu\":\"6000000000\"}"),
    );
    assert!(err.contains("both"), "{err}");
}

/// An input that does not decode from where the flags say it starts, but does from another
/// start, gets a hint naming the flags that read it: a frame without its length prefix and a
/// MAC input block are the usual mix-ups, and their errors do not say so.
#[test]
fn decode_errors_hint_at_the_flags_that_read_the_input() {
    let from_tpdu = sample("ajsgn_datetest_0400_reversal.hex");
    let from_tpdu = from_tpdu.as_str();
    let mab = sample("chfenix_0200_purchase_mab.hex");
    let mab = mab.as_str();
    let framed = sample("ajsgn_quickstart_0800_signin_request.hex");
    let framed = framed.as_str();
    for (args, expected) in [
        (
            &[from_tpdu][..],
            "error: frame: length 24592 exceeds max 4096 (starts at the TPDU? try --no-length)",
        ),
        (
            &["--no-frame", from_tpdu],
            "error: field 7: not defined in this dialect \
             (starts at the TPDU? try --no-length instead of --no-frame)",
        ),
        (
            &[mab],
            "error: frame: length prefix says 512 bytes, 94 follow \
             (a MAC input? try --no-frame --mac-input)",
        ),
        (
            &["--no-length", mab],
            "error: TPDU: first byte 0x02, expected 0x60 \
             (a MAC input? try --no-frame --mac-input instead of --no-length)",
        ),
        (
            &["--no-length", framed],
            "error: TPDU: first byte 0x00, expected 0x60 \
             (starts at the length prefix? drop --no-length)",
        ),
    ] {
        let all = [&["iso", "decode"][..], args].concat();
        assert_eq!(fail(&all, None), expected, "{args:?}");
    }
}

#[test]
fn encode_takes_a_file_and_hex_for_non_ascii_text() {
    let json = r#"{"tpdu":"6000010000","header":"603100000000","mti":"0810",
        "fields":{"11":"000001","39":"A0","63":{"hex":"435550B2E2CAD4"}}}"#;
    let path = std::env::temp_dir().join(format!("shoudan-cli-iso-{}.json", std::process::id()));
    std::fs::write(&path, json).unwrap();
    let out = run(&["iso", "encode", path.to_str().unwrap()], None);
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (v, stdout) = decode(&[&hex], None);
    assert_eq!(v["header"], "603100000000");
    assert_eq!(v["fields"]["39"], "A0");
    assert_eq!(v["fields"]["63"]["hex"], "435550B2E2CAD4");
    assert_eq!(encode(&stdout), hex);
}

#[test]
fn ic_data_is_shown_tag_by_tag_without_the_card_number_track_or_expiry() {
    // 5A: the PAN; 57: track 2 equivalent; 5F24: expiry; 9F26: the cryptogram; 82: AIP.
    let ic = [
        "9F2608A1B2C3D4E5F60718",
        "5A0A6222020000000000185F",
        "570E6222020000000000185D2912201F",
        "5F2403291231",
        "5F2A020156",
        "82025C00",
        // A template (constructed tag 70) around a second track 2 equivalent, and a tag below
        // 0x10 inside it.
        "700C570662220200001807020101",
    ]
    .concat();
    let json = format!(r#"{{"mti":"0200","fields":{{"11":"000001","55":{{"hex":"{ic}"}}}}}}"#);
    let hex = encode(&json);
    let (v, stdout) = decode(&["--body", "--mti", "0200", hex.get(4..).unwrap()], None);
    let tags = v["fields"]["55"].as_array().unwrap();
    let shown: Vec<(&str, &str)> = tags
        .iter()
        .take(6)
        .map(|t| (t["tag"].as_str().unwrap(), t["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            ("9F26", "A1B2C3D4E5F60718"),
            ("5A", "<10 bytes, not shown>"),
            ("57", "<14 bytes, not shown>"),
            ("5F24", "<3 bytes, not shown>"),
            ("5F2A", "0156"),
            ("82", "5C00"),
        ]
    );
    let template = &tags[6];
    assert_eq!(template["tag"], "70");
    assert_eq!(
        template["value"],
        serde_json::json!([
            {"tag": "57", "value": "<6 bytes, not shown>"},
            {"tag": "07", "value": "0101"},
        ])
    );
    for secret in ["6222020000000000185", "2912", "622202000018"] {
        assert!(!stdout.contains(secret), "{secret} leaked: {stdout}");
    }
    // Encode takes the tag list back; a hidden value must be given in full.
    let refused = fail(&["iso", "encode"], Some(&stdout));
    assert!(refused.contains("tag 5A is a hidden value"), "{refused}");
    let restored = stdout
        .replace("<10 bytes, not shown>", "6222020000000000185F")
        .replace("<14 bytes, not shown>", "6222020000000000185D2912201F")
        .replace("<6 bytes, not shown>", "622202000018")
        .replace("<3 bytes, not shown>", "291231");
    assert_eq!(encode(&restored), hex);
    // IC data that is not TLV is not shown at all.
    let json = r#"{"mti":"0200","fields":{"11":"000001","55":{"hex":"5A0862220200"}}}"#;
    let (v, stdout) = decode(
        &["--body", "--mti", "0200", encode(json).get(4..).unwrap()],
        None,
    );
    assert_eq!(v["fields"]["55"], "<IC data, 6 bytes, not TLV: not shown>");
    assert!(!stdout.contains("622202"), "{stdout}");
}

#[test]
fn field_48_in_no_known_layout_is_not_shown() {
    let digits = "1".repeat(50);
    let json = format!(r#"{{"mti":"0320","fields":{{"11":"000001","48":"{digits}"}}}}"#);
    let (v, stdout) = decode(
        &["--body", "--mti", "0320", encode(&json).get(4..).unwrap()],
        None,
    );
    assert_eq!(
        v["fields"]["48"],
        "<50 digits, not a batch-upload layout: not shown>"
    );
    assert!(!stdout.contains(&digits), "{stdout}");
}

/// A card's expiry in field 14 is not shown (as its copy in field 55 is not), and the hidden
/// value is refused by encode.
#[test]
fn the_expiry_in_field_14_is_hidden() {
    let mut full = serde_json::from_str::<Value>(
        &decode(
            &[
                &sample("soloicesky_0200_purchase_request_body.hex"),
                "--body",
                "--mti",
                "0200",
            ],
            None,
        )
        .1,
    )
    .unwrap();
    full["fields"]["2"] = "6222020200112347".into();
    full["fields"]["14"] = "4912".into();
    if let Some(fields) = full["fields"].as_object_mut() {
        fields.remove("35");
        fields.remove("36");
        fields.remove("52");
        fields.remove("55");
    }
    let frame = encode(&full.to_string());
    let (v, stdout) = decode(&["--no-frame", &frame], None);
    assert_eq!(v["fields"]["14"], "<expiry>", "{stdout}");
    assert!(!stdout.contains("4912"), "{stdout}");
    let err = fail(&["iso", "encode"], Some(&stdout));
    assert!(err.contains("field 14"), "{err}");
}
