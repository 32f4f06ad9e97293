//! Frame decoder fuzz target: any bytes give a typed error or a frame that re-encodes to the
//! same bytes, and every accessor over it returns without panicking.
//! Run from `crates/iso8583/fuzz` (stable toolchain):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run frame_decode -- -max_total_time=30`
#![no_main]

use iso8583::{Frame, Message, MessageBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let m = &frame.message;
        let _ = (m.field48(), m.field60(), m.field61(), m.security_control(), m.working_keys());
        let _ = (m.txn_kind(), m.amount(), m.response_code(), m.processing_code(), m.mac());
        for field in m.fields() {
            let _ = (field.digits().map(|d| d.to_string()), field.text());
        }
        if frame.routing.is_none() {
            let mut out = Vec::new();
            MessageBuilder::from_message(m)
                .encode_frame(&frame.head, &mut out)
                .expect("a decoded frame re-encodes");
            assert_eq!(out, data, "re-encoding changed the bytes");
        }
    }
    let _ = Frame::decode_unprefixed(data);
    if let Ok(m) = Message::decode_mac_input(data) {
        assert!(data.starts_with(m.mac_input()));
    }
});
