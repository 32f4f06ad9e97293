//! Decoding and re-encoding allocate nothing per message: counted with dhat's global allocator
//! in testing mode. One test in this binary, because the profiler is process-wide.
#![cfg(test)]

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use iso8583::{Field60, Frame, FrameHead, Header, MessageBuilder, Mti, Tpdu};

#[test]
fn decode_and_reencode_into_a_reused_buffer_allocate_nothing() {
    let mut b = MessageBuilder::new(Mti::FINANCIAL);
    b.set_digits(2, "6222021234567890123").unwrap();
    b.set_digits(3, "000000").unwrap();
    b.set_amount(12_345).unwrap();
    b.set_stan(1_234).unwrap();
    b.set_digits(14, "2912").unwrap();
    b.set_digits(22, "021").unwrap();
    b.set_digits(25, "00").unwrap();
    b.set_digits(26, "12").unwrap();
    b.set_track(35, "6222021234567890123=29121010000012300")
        .unwrap();
    b.set_text(41, "12345678").unwrap();
    b.set_text(42, "123456789012345").unwrap();
    b.set_text(49, "156").unwrap();
    b.set_binary(52, &[0x11; 8]).unwrap();
    b.set_digits(53, "2600000000000000").unwrap();
    b.set_composed(&Field60 {
        message_type: 22,
        batch: Some(1),
        ..Field60::default()
    })
    .unwrap();
    b.set_binary(64, &[0xA5; 8]).unwrap();
    let head = FrameHead {
        tpdu: Tpdu {
            destination: [0, 1],
            source: [0, 0],
        },
        header: Header::from_bytes([0x60, 0x22, 0, 0, 0, 0]).unwrap(),
    };
    let mut wire = Vec::with_capacity(512);
    b.encode_frame(&head, &mut wire).unwrap();
    let mut out = Vec::with_capacity(512);

    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let mut checksum = 0u64;
    for _ in 0..100 {
        let frame = Frame::decode(std::hint::black_box(&wire)).unwrap();
        let m = &frame.message;
        checksum += m.amount().unwrap() + u64::from(m.stan().unwrap());
        checksum += m.digits(2).unwrap().len() as u64 + m.mac_input().len() as u64;
        checksum += u64::from(m.field60().unwrap().unwrap().message_type);
        checksum += u64::from(m.security_control().unwrap().unwrap().key_type);
        // Re-encode the reply-style echo into a buffer that already has capacity.
        out.clear();
        b.encode_frame(&head.reply(), &mut out).unwrap();
    }
    let after = dhat::HeapStats::get();
    let mac_input_len = (wire.len() - 2 - 5 - 6 - 8) as u64;
    assert_eq!(
        checksum,
        100 * (12_345 + 1_234 + 19 + mac_input_len + 22 + 6)
    );
    // Fewer blocks than messages: no message allocated. (Not zero: the profiler counts the
    // whole process, and on a loaded machine the test harness's own threads have been seen
    // to allocate a few blocks during the loop.)
    let blocks = after.total_blocks - before.total_blocks;
    dhat::assert!(blocks < 100, "{blocks} blocks allocated over 100 messages");
}
