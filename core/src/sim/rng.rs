//! The simulator's own PRNG: xoshiro256** seeded through splitmix64.
//!
//! No OS entropy anywhere: the same seed gives the same stream on native and wasm32.

/// A small, fast, seedable generator (xoshiro256**, state filled by splitmix64).
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

/// One splitmix64 step: advances `seed` and returns a well-mixed word.
fn splitmix64(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed` (every seed, including 0, gives a good stream).
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        Self { state: [splitmix64(&mut s), splitmix64(&mut s), splitmix64(&mut s), splitmix64(&mut s)] }
    }

    /// An independent generator derived from this one's seed and a stream number, so that
    /// adding draws to one concern (say, faults) does not shift another (say, the guest).
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut s = seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        Self::new(splitmix64(&mut s))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// A uniform integer in `[0, bound)`; 0 when `bound` is 0. Lemire's multiply-shift
    /// with rejection, so there is no modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let wide = u128::from(self.next_u64()) * u128::from(bound);
            if (wide as u64) >= threshold {
                return (wide >> 64) as u64;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An exponentially distributed float with mean 1 (`-ln U`, U uniform in (0, 1]): the
    /// gaps of a Poisson process. Uses [`ln`] (basic IEEE operations only), so the stream is
    /// the same on every platform; the largest value is about 36.7.
    pub fn exponential(&mut self) -> f64 {
        -ln(1.0 - self.unit_f64())
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit_f64() < p
    }
}

/// The natural logarithm of a positive finite `x`, from IEEE additions, multiplications
/// and divisions only (a platform's libm may round differently, which would break
/// determinism across native and wasm32). Split `x = m * 2^e` with `m` in [0.707, 1.414],
/// then `ln m = 2 atanh(s)`, `s = (m - 1) / (m + 1)`, `|s| <= 0.172`, summed to 1e-17.
pub fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    const LN_2: f64 = std::f64::consts::LN_2;
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if exponent == -1023 {
        // Subnormal: scale into the normal range first.
        return ln(x * (1u64 << 54) as f64) - 54.0 * LN_2;
    }
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        exponent += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while term.abs() > 1e-18 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    exponent as f64 * LN_2 + 2.0 * sum
}

#[cfg(test)]
mod tests {
    use super::{ln, Rng};

    #[test]
    fn ln_matches_the_platform_closely_and_exponential_has_mean_one() {
        for x in [1e-300, 1e-10, 0.001, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 10.0, 1e10, 1e300] {
            let (ours, libm) = (ln(x), f64::ln(x));
            assert!((ours - libm).abs() <= 1e-14 * libm.abs().max(1.0), "ln({x}) = {ours}, libm {libm}");
        }
        assert_eq!(ln(1.0), 0.0);
        let mut rng = Rng::new(9);
        let mean = (0..100_000).map(|_| rng.exponential()).sum::<f64>() / 100_000.0;
        assert!((0.98..1.02).contains(&mean), "{mean}");
    }

    #[test]
    fn same_seed_same_stream_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        assert_eq!(Rng::new(3).below(0), 0);
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[rng.below(4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
