//! A ChaCha stream read in blocks, for the Gaussian sampler.
//!
//! `rand_distr`'s ziggurat asks its generator for one 64-bit word per value.
//! Asked of a `ChaCha20Rng` one call at a time, that costs more than the
//! ChaCha block function itself: filling 535 818 normals (the benchmark
//! MLP's parameters) took 4.5 ms on one x86-64 core, against 2.2 ms to
//! fill the same 4.3 MB of keystream in bulk (issue 31). [`StreamWords`]
//! takes the keystream [`WORDS`] 32-bit words at a time with one bulk
//! [`Rng::fill`] and serves them in stream order, exactly as the generator
//! would have — same words, same order, same little-endian pairing into 64
//! bits — so the noise is bit for bit what sampling the generator directly
//! gives (tested below against the generator), in 3.7 ms.

use rand::{Rng, RngCore};
use rand_chacha::ChaCha20Rng;

/// Keystream words taken per bulk fill (1 KiB: four ChaCha refills).
const WORDS: usize = 256;

/// `rng`'s keystream served word by word from a buffer; see the module
/// documentation. Reading from it advances `rng` by whole buffers, so it
/// is only for a generator that is not used again afterwards (each noise
/// chunk's own stream).
pub(super) struct StreamWords {
    rng: ChaCha20Rng,
    words: [u32; WORDS],
    next: usize,
}

impl StreamWords {
    /// Words from `rng`'s current position on.
    pub(super) fn new(rng: ChaCha20Rng) -> Self {
        Self {
            rng,
            words: [0; WORDS],
            next: WORDS,
        }
    }
}

impl RngCore for StreamWords {
    #[inline]
    fn next_u32(&mut self) -> u32 {
        if self.next == WORDS {
            self.rng.fill(&mut self.words[..]);
            self.next = 0;
        }
        let w = self.words[self.next];
        self.next += 1;
        w
    }

    /// Two consecutive words, the first as the low half (as
    /// `rand_core`'s block generators pair them).
    #[inline]
    fn next_u64(&mut self) -> u64 {
        if self.next + 2 <= WORDS {
            let (lo, hi) = (self.words[self.next], self.words[self.next + 1]);
            self.next += 2;
            return (u64::from(hi) << 32) | u64::from(lo);
        }
        let lo = self.next_u32();
        let hi = self.next_u32();
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// Whole words, little-endian, a partial word's unused bytes discarded
    /// (as the generator's own `fill_bytes` does).
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(4) {
            let bytes = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::StandardNormal;

    fn generator(seed: u64, stream: u64) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        rng
    }

    #[test]
    fn should_give_the_generators_normals_bit_for_bit() {
        // Lengths across several buffers, streams as the noise chunks use.
        for (seed, stream, len) in [(1, 0, 10), (7, 3, 20_000), (42, 65_535, 70_001)] {
            let mut direct = generator(seed, stream);
            let mut words = StreamWords::new(generator(seed, stream));
            for i in 0..len {
                let a: f32 = direct.sample(StandardNormal);
                let b: f32 = words.sample(StandardNormal);
                assert_eq!(a.to_bits(), b.to_bits(), "seed {seed} value {i}");
            }
            let a: f64 = direct.sample(StandardNormal);
            let b: f64 = words.sample(StandardNormal);
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn should_serve_the_keystream_in_order_whatever_the_call_mix() {
        // 32- and 64-bit reads and odd byte fills, so that 64-bit reads
        // straddle the buffer's end at both parities.
        let mut direct = generator(5, 9);
        let mut words = StreamWords::new(generator(5, 9));
        for step in 0..3_000usize {
            match step % 5 {
                0 | 3 => assert_eq!(direct.next_u64(), words.next_u64(), "step {step}"),
                1 => assert_eq!(direct.next_u32(), words.next_u32(), "step {step}"),
                _ => {
                    let len = step % 13;
                    let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                    direct.fill_bytes(&mut a);
                    words.fill_bytes(&mut b);
                    assert_eq!(a, b, "step {step}");
                }
            }
        }
    }
}
