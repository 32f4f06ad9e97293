//! BIN lookup cost on the authorisation path: a hit at 6 digits, a hit at 9, a foreign miss.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use domain::{IssuerDirectory, Pan};

fn lookups(c: &mut Criterion) {
    let Ok(directory) = IssuerDirectory::embedded() else {
        return;
    };
    let cases = [
        ("icbc_6_digit_bin", "6222020200112345679"),
        ("xfrcb_9_digit_bin", "6212600011234567895"),
        ("visa_miss", "4111111111111111"),
    ];
    for (name, digits) in cases {
        let Ok(pan) = digits.parse::<Pan>() else {
            continue;
        };
        c.bench_function(name, |b| {
            b.iter(|| {
                directory
                    .lookup(black_box(&pan))
                    .issuer
                    .map(|m| m.card_type)
            })
        });
    }
    c.bench_function("load_embedded", |b| b.iter(IssuerDirectory::embedded));
}

criterion_group!(benches, lookups);
criterion_main!(benches);
