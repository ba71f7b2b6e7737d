//! The realistic token mix of the "mix" rows: which token of a pool each request carries,
//! drawn from a Zipf distribution (a few customers send most requests, many send a few) by a
//! seeded generator, so every run and every row sends the same sequence.
//!
//! The pool is sized from the row's load so that a token is used [`USES_PER_TOKEN`] times on
//! average over the row's whole run (warm-up and rounds): a verified-token cache hits most of
//! the time, and misses on a token's first use (on each worker) and after an eviction.

/// Average uses of a pool token over a row's run.
pub const USES_PER_TOKEN: f64 = 20.0;
/// Zipf's exponent: the k-th most used token is drawn with weight 1/k.
const EXPONENT: f64 = 1.0;
/// Any fixed value: the sequence only has to be the same in every run.
const SEED: u64 = 0x6261_6e6b_696e_6721;

/// The tokens a mixed row sends over its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// Tokens in the pool.
    pub pool: usize,
    /// Index into the pool of each request's token, in sending order.
    pub order: Vec<usize>,
}

impl Mix {
    /// The pool for a row that sends `requests` requests over its run.
    pub fn pool_for(requests: usize) -> usize {
        ((requests as f64 / USES_PER_TOKEN).round() as usize).max(1)
    }

    /// The mix for a row that sends `requests` requests over its run.
    pub fn for_requests(requests: usize) -> Mix {
        let pool = Mix::pool_for(requests);
        Mix {
            pool,
            order: zipf_order(pool, requests, SEED),
        }
    }

    /// Tokens of the pool the sequence uses at least once (the tail may miss a few).
    pub fn drawn(&self) -> usize {
        let mut used = vec![false; self.pool];
        for &i in &self.order {
            if let Some(u) = used.get_mut(i) {
                *u = true;
            }
        }
        used.iter().filter(|u| **u).count()
    }
}

/// `len` draws from Zipf(`EXPONENT`) over `0..pool`, index 0 the most frequent.
fn zipf_order(pool: usize, len: usize, seed: u64) -> Vec<usize> {
    let mut total = 0.0;
    let cumulative: Vec<f64> = (1..=pool)
        .map(|k| {
            total += (k as f64).powf(-EXPONENT);
            total
        })
        .collect();
    let mut random = SplitMix64(seed);
    (0..len)
        .map(|_| {
            let u = random.unit() * total;
            cumulative
                .partition_point(|&c| c <= u)
                .min(pool.saturating_sub(1))
        })
        .collect()
}

/// SplitMix64 (Steele, Lea and Flood): a few lines, good enough statistically for a load
/// sequence, and no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_the_same_in_every_run() {
        assert_eq!(Mix::for_requests(5750), Mix::for_requests(5750));
    }

    #[test]
    fn each_token_is_used_about_twenty_times_and_the_head_most() {
        let mix = Mix::for_requests(5750);
        assert_eq!(mix.pool, 288);
        assert_eq!(mix.order.len(), 5750);
        assert!(mix.order.iter().all(|&i| i < mix.pool));
        let per_drawn = mix.order.len() as f64 / mix.drawn() as f64;
        assert!((19.0..22.0).contains(&per_drawn), "{per_drawn}");
        // Zipf with exponent 1 over 288 tokens: the most used takes 1/H(288), about 16%.
        let first = mix.order.iter().filter(|&&i| i == 0).count() as f64 / 5750.0;
        assert!((0.13..0.19).contains(&first), "{first}");
    }
}
