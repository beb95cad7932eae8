//! The generator of the crate's randomised tests: xorshift64*, seeded, so
//! that every run explores the same inputs.

pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (not 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// 128 random bits.
    pub(crate) fn wide(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }

    /// Up to `max - 1` of `alphabet`, picked at random.
    pub(crate) fn some_of<T: Copy>(&mut self, alphabet: &[T], max: usize) -> Vec<T> {
        let count = self.below(max);
        (0..count)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }

    /// Up to `max - 1` of `pieces`, picked at random, end to end.
    pub(crate) fn text(&mut self, pieces: &[&str], max: usize) -> String {
        self.some_of(pieces, max).concat()
    }
}
