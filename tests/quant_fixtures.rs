//! The CPU dequantizer (`tandem::quant`) against gguf-py's reference decoder, bit for bit,
//! on the blocks in tests/fixtures/quant (README.md there says how they were made).

use tandem::quant::{dequantize, GgmlType};

use GgmlType::*;

/// (type, GGUF block bytes, gguf-py's decoded values as little-endian f32).
const FIXTURES: [(GgmlType, &[u8], &[u8]); 12] = [
    (
        Q4_0,
        include_bytes!("fixtures/quant/Q4_0.blocks"),
        include_bytes!("fixtures/quant/Q4_0.f32"),
    ),
    (
        Q4_1,
        include_bytes!("fixtures/quant/Q4_1.blocks"),
        include_bytes!("fixtures/quant/Q4_1.f32"),
    ),
    (
        Q5_0,
        include_bytes!("fixtures/quant/Q5_0.blocks"),
        include_bytes!("fixtures/quant/Q5_0.f32"),
    ),
    (
        Q5_1,
        include_bytes!("fixtures/quant/Q5_1.blocks"),
        include_bytes!("fixtures/quant/Q5_1.f32"),
    ),
    (
        Q8_0,
        include_bytes!("fixtures/quant/Q8_0.blocks"),
        include_bytes!("fixtures/quant/Q8_0.f32"),
    ),
    (
        Q2_K,
        include_bytes!("fixtures/quant/Q2_K.blocks"),
        include_bytes!("fixtures/quant/Q2_K.f32"),
    ),
    (
        Q3_K,
        include_bytes!("fixtures/quant/Q3_K.blocks"),
        include_bytes!("fixtures/quant/Q3_K.f32"),
    ),
    (
        Q4_K,
        include_bytes!("fixtures/quant/Q4_K.blocks"),
        include_bytes!("fixtures/quant/Q4_K.f32"),
    ),
    (
        Q5_K,
        include_bytes!("fixtures/quant/Q5_K.blocks"),
        include_bytes!("fixtures/quant/Q5_K.f32"),
    ),
    (
        Q6_K,
        include_bytes!("fixtures/quant/Q6_K.blocks"),
        include_bytes!("fixtures/quant/Q6_K.f32"),
    ),
    (
        IQ4_NL,
        include_bytes!("fixtures/quant/IQ4_NL.blocks"),
        include_bytes!("fixtures/quant/IQ4_NL.f32"),
    ),
    (
        IQ4_XS,
        include_bytes!("fixtures/quant/IQ4_XS.blocks"),
        include_bytes!("fixtures/quant/IQ4_XS.f32"),
    ),
];

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    for (ty, blocks, values) in FIXTURES {
        let want: Vec<u32> = values
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(blocks.len() / ty.type_size() * ty.block_size(), want.len());
        let got = dequantize(ty, blocks, want.len()).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{} element {i} (block {}, offset {}): {g} vs gguf-py {}",
                ty.name(),
                i / ty.block_size(),
                i % ty.block_size(),
                f32::from_bits(*w)
            );
        }
    }
}

#[test]
fn every_fixture_type_round_trips_its_id() {
    for (ty, _, _) in FIXTURES {
        assert_eq!(GgmlType::from_id(ty.id()).unwrap(), ty);
        assert!(ty.is_supported(), "{}", ty.name());
    }
}
