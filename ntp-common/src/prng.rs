//! A small deterministic generator (xorshift64*) for simulations and the test server,
//! where a seeded, reproducible sequence matters more than quality.

/// xorshift64* state.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (zero is replaced: the state must not be zero).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_reproducible() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        let xs: [f64; 1000] = core::array::from_fn(|_| a.unit());
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert_eq!(xs[999], {
            let mut last = 0.0;
            for _ in 0..1000 {
                last = b.unit();
            }
            last
        });
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }
}
