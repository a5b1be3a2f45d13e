//! CPython's `random.Random` (MT19937) as far as the reference loaders use it: an integer seed and
//! `shuffle`, drawing the same numbers as CPython.

/// Words of Mersenne Twister state.
const N: usize = 624;
/// The twist offset.
const M: usize = 397;

/// A generator seeded as `random.Random(seed)` is.
pub struct PyRandom {
    mt: [u32; N],
    /// Next state word to temper; `N` means the state must be twisted first.
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)`: the seed's absolute value, as little-endian 32-bit words, through
    /// `init_by_array`.
    pub fn new(seed: i128) -> Self {
        let n = seed.unsigned_abs();
        let words = (128 - n.leading_zeros()).div_ceil(32).max(1) as usize;
        let key: Vec<u32> = (0..words).map(|w| (n >> (32 * w)) as u32).collect();
        let mut rng = Self { mt: [0; N], index: N };
        rng.init_by_array(&key);
        rng
    }

    fn init_genrand(&mut self, seed: u32) {
        self.mt[0] = seed;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
        self.index = N;
    }

    /// The next 32 random bits (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            for k in 0..N {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `_randbelow(n)` for `0 < n < 2^32`: `getrandbits(n.bit_length())` until below `n`.
    fn below(&mut self, n: u32) -> u32 {
        let bits = 32 - n.leading_zeros();
        loop {
            let r = self.next_u32() >> (32 - bits);
            if r < n {
                return r;
            }
        }
    }

    /// `shuffle(items)`: Fisher–Yates from the back, as CPython draws it.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PyRandom;

    /// Values printed by CPython 3 (`random.Random(seed)`, `getrandbits(32)`, `shuffle`).
    #[test]
    fn draws_what_cpython_draws() {
        for (seed, first) in [
            (0i128, [3626764237u32, 1654615998, 3255389356]),
            (1, [577090037, 2444712010, 3639700191]),
            (42, [2746317213, 478163327, 107420369]),
            (1 << 32, [485306839, 1508871100, 1794561286]),
            (u64::MAX as i128, [93740670, 1068495656, 1452108352]),
            (-7, [1390851128, 4071050724, 647892279]),
        ] {
            let mut rng = PyRandom::new(seed);
            assert_eq!([rng.next_u32(), rng.next_u32(), rng.next_u32()], first, "seed {seed}");
        }
        // Past the first twist of the state.
        let mut rng = PyRandom::new(123);
        let draws: Vec<u32> = (0..700).map(|_| rng.next_u32()).collect();
        assert_eq!(draws[698..], [1981416960, 2987994967]);
        for (seed, want) in [
            (0i128, [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]),
            (42, [7, 3, 2, 8, 5, 6, 9, 4, 0, 1]),
            ((1 << 40) + 5, [1, 2, 3, 6, 7, 0, 5, 4, 9, 8]),
        ] {
            let mut items: Vec<usize> = (0..10).collect();
            PyRandom::new(seed).shuffle(&mut items);
            assert_eq!(items, want, "seed {seed}");
        }
        let mut items: Vec<usize> = (0..1000).collect();
        PyRandom::new(42).shuffle(&mut items);
        assert_eq!(items[..8], [776, 507, 895, 922, 33, 483, 85, 750]);
        assert_eq!(items.iter().enumerate().map(|(i, v)| i * v).sum::<usize>(), 250181598);
    }
}
