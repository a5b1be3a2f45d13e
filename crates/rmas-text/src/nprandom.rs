//! numpy's default generator (`np.random.default_rng(seed)`: `SeedSequence` → PCG64 XSL-RR) and its
//! `permutation(n)`, as Hugging Face `datasets`' `Dataset.shuffle(seed)` draws its order — the order
//! the reference evaluates a shuffled Hub dataset in.

/// PCG64 as numpy seeds and steps it.
pub struct NumpyRng {
    state: u128,
    inc: u128,
    /// The upper half of the last 64-bit draw, kept for the next 32-bit draw.
    spare: Option<u32>,
}

const PCG_MULTIPLIER: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

impl NumpyRng {
    /// `np.random.default_rng(seed)`.
    pub fn new(seed: u64) -> Self {
        let words = seed_sequence_state(seed);
        let init_state = (u128::from(words[0]) << 64) | u128::from(words[1]);
        let init_seq = (u128::from(words[2]) << 64) | u128::from(words[3]);
        let mut rng = Self { state: 0, inc: (init_seq << 1) | 1, spare: None };
        rng.step();
        rng.state = rng.state.wrapping_add(init_state);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULTIPLIER).wrapping_add(self.inc);
    }

    /// The next 64-bit output (XSL-RR of the stepped state).
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let folded = ((self.state >> 64) as u64) ^ (self.state as u64);
        folded.rotate_right((self.state >> 122) as u32)
    }

    /// The next 32-bit output: the low half of a 64-bit draw, then its high half.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(high) = self.spare.take() {
            return high;
        }
        let next = self.next_u64();
        self.spare = Some((next >> 32) as u32);
        next as u32
    }

    /// A uniform integer in `0..=max` by masked rejection (numpy's `random_interval`).
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        loop {
            let value =
                if max <= u64::from(u32::MAX) { u64::from(self.next_u32()) & mask } else { self.next_u64() & mask };
            if value <= max {
                return value;
            }
        }
    }

    /// `Generator.permutation(n)`: a Fisher–Yates shuffle of `0..n` from the back.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            order.swap(i, j);
        }
        order
    }
}

/// `SeedSequence(seed).generate_state(4, np.uint64)`.
fn seed_sequence_state(seed: u64) -> [u64; 4] {
    const INIT_A: u32 = 0x43b0_d7e5;
    const MULT_A: u32 = 0x931e_8875;
    const INIT_B: u32 = 0x8b51_f9dd;
    const MULT_B: u32 = 0x58f3_8ded;
    const MIX_L: u32 = 0xca01_f9dd;
    const MIX_R: u32 = 0x4973_f715;
    let mut hash = INIT_A;
    let mut hashmix = |value: u32| {
        let mut value = value ^ hash;
        hash = hash.wrapping_mul(MULT_A);
        value = value.wrapping_mul(hash);
        value ^ (value >> 16)
    };
    let mix = |x: u32, y: u32| {
        let r = MIX_L.wrapping_mul(x).wrapping_sub(MIX_R.wrapping_mul(y));
        r ^ (r >> 16)
    };
    // The seed as little-endian 32-bit words (one word for seeds below 2^32).
    let entropy: Vec<u32> = if seed >> 32 == 0 { vec![seed as u32] } else { vec![seed as u32, (seed >> 32) as u32] };
    let mut pool = [0u32; 4];
    for (i, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..4 {
        for dst in 0..4 {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    let mut hash = INIT_B;
    let mut words = [0u32; 8];
    for (i, word) in words.iter_mut().enumerate() {
        let mut value = pool[i % 4] ^ hash;
        hash = hash.wrapping_mul(MULT_B);
        value = value.wrapping_mul(hash);
        *word = value ^ (value >> 16);
    }
    std::array::from_fn(|i| u64::from(words[2 * i]) | (u64::from(words[2 * i + 1]) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy 2.x: `np.random.default_rng(seed).permutation(n)[:8]` and the first raw draw.
    #[test]
    fn draws_what_numpy_draws() {
        assert_eq!(NumpyRng::new(42).next_u64(), 14276969152011380360);
        for (seed, n, head) in [
            (42, 10, [5, 6, 0, 7, 3, 2, 4, 9]),
            (42, 500, [473, 132, 472, 46, 40, 232, 45, 428]),
            (1, 1000, [705, 649, 543, 927, 577, 471, 608, 252]),
            ((1 << 40) + 3, 33, [11, 4, 30, 23, 28, 19, 9, 12]),
        ] {
            assert_eq!(NumpyRng::new(seed).permutation(n)[..8], head, "seed {seed}, n {n}");
        }
        assert_eq!(NumpyRng::new(0).permutation(7), [2, 4, 3, 6, 5, 0, 1]);
    }
}
