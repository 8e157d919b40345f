//! GPTQ bit layout: codes are fields of a little-endian stream of 32-bit words.
//!
//! Along a packed axis, code `i` of `bits` bits occupies bits `[i*bits, i*bits + bits)` of the
//! concatenated words (`w0 | w1 << 32 | ...`). For 2, 4 and 8 bits a field never crosses a word;
//! for 3 bits, 32 codes fill three words and codes 10 and 21 of each triple straddle two.

use super::{GptqLayout, ZeroFormat};

/// Codes per group of whole words: 16, 32, 8, 4 for 2, 3, 4, 8 bits.
pub const fn codes_per_block(bits: u8) -> usize {
    match bits {
        3 => 32,
        b => 32 / b as usize,
    }
}

/// Word index and shift of code `i` along a packed axis.
#[inline(always)]
pub fn locate(i: usize, bits: u8) -> (usize, u32) {
    let bit = i * bits as usize;
    (bit / 32, (bit % 32) as u32)
}

/// Code `i` of a stream of words given by `word(j)`.
#[inline(always)]
pub fn field(word: impl Fn(usize) -> u32, i: usize, bits: u8) -> u32 {
    let (j, shift) = locate(i, bits);
    let mask = (1u32 << bits) - 1;
    let lo = word(j) >> shift;
    if shift + bits as u32 > 32 { (lo | (word(j + 1) << (32 - shift))) & mask } else { lo & mask }
}

/// The word constant GPTQModel adds (wrapping) to a v1 qzeros word to get v2: 1 in every field.
pub const fn v1_word_increment(bits: u8) -> u32 {
    match bits {
        2 => 0x5555_5555,
        4 => 0x1111_1111,
        _ => 0x0101_0101,
    }
}

/// The true zero points `[G, N]` from `qzeros` (length already checked).
pub fn unpack_zeros(qzeros: &[i32], layout: &GptqLayout, format: ZeroFormat) -> Vec<u32> {
    let (g, zc) = layout.qzeros_shape();
    let (n, bits) = (layout.n(), layout.bits());
    let mask = (1u32 << bits) - 1;
    let mut out = Vec::with_capacity(g * n);
    for row in qzeros.chunks_exact(zc.max(1)).take(g) {
        if bits != 3 {
            // Whole fields per word: one pass over the words, no per-field word lookup.
            let inc = if format == ZeroFormat::V1 { v1_word_increment(bits) } else { 0 };
            for &w in row {
                let w = (w as u32).wrapping_add(inc);
                out.extend((0..32 / bits as u32).map(|t| (w >> (bits as u32 * t)) & mask));
            }
            continue;
        }
        let word = |j: usize| row[j] as u32;
        for i in 0..n {
            let f = field(word, i, bits);
            out.push(match format {
                ZeroFormat::V1 => (f + 1) & mask,
                ZeroFormat::V2 => f,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bit_fields_straddle_words() {
        // Codes 0..31 = i % 8 laid out as a 96-bit stream.
        let mut stream = [0u32; 3];
        for i in 0..32usize {
            let bit = 3 * i;
            let v = (i % 8) as u64;
            let wide = v << (bit % 32);
            stream[bit / 32] |= wide as u32;
            if bit % 32 > 29 {
                stream[bit / 32 + 1] |= (wide >> 32) as u32;
            }
        }
        for i in 0..32 {
            assert_eq!(field(|j| stream[j], i, 3), (i % 8) as u32, "code {i}");
        }
        assert_eq!(locate(10, 3), (0, 30));
        assert_eq!(locate(21, 3), (1, 31));
        assert_eq!(field(|_| 0x7654_3210, 5, 4), 5);
    }
}
