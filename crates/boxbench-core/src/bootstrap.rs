//! Bootstrap confidence intervals: how sure a median, or a ratio of two medians, is.
//!
//! Launch times are skewed and few (20 launches is a typical series), so intervals come from the
//! percentile bootstrap rather than a normal approximation: the samples are resampled with
//! replacement [`RESAMPLES`] times, the statistic is computed on each resample, and the 2.5th and
//! 97.5th percentiles of those estimates bound the 95% interval. The random numbers come from a
//! fixed-seed SplitMix64 generator, so the same samples always give the same interval (a report can
//! be regenerated from its results.json and say the same thing).

/// Resamples per interval.
pub const RESAMPLES: usize = 2000;
/// The generator's seed: fixed, so intervals are reproducible.
pub const SEED: u64 = 0x0b0c_b3c4_5eed_2026;
/// The fewest samples a side needs for an interval (one sample has no spread to resample).
pub const MIN_SAMPLES: usize = 2;

/// SplitMix64 (Steele, Lea and Flood): a small, fast generator with good statistical quality, enough
/// for resampling indices.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n` > 0), by the multiply-shift method.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The median of `values` (reordered in place; the mean of the middle two for an even count).
fn median_in_place(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// One resample of `samples` into `out`, and its median.
fn resampled_median(samples: &[f64], out: &mut Vec<f64>, rng: &mut SplitMix64) -> f64 {
    out.clear();
    out.extend((0..samples.len()).map(|_| samples[rng.below(samples.len())]));
    median_in_place(out)
}

/// The 2.5th and 97.5th percentiles of `estimates`.
fn percentile_interval(mut estimates: Vec<f64>) -> Option<[f64; 2]> {
    estimates.retain(|e| e.is_finite());
    if estimates.is_empty() {
        return None;
    }
    estimates.sort_by(f64::total_cmp);
    let last = (estimates.len() - 1) as f64;
    let at = |q: f64| estimates[(q * last).round() as usize];
    Some([at(0.025), at(0.975)])
}

fn finite(samples: &[f64]) -> Vec<f64> {
    samples.iter().copied().filter(|v| v.is_finite()).collect()
}

/// The 95% bootstrap interval of the median of `samples` (`None` below [`MIN_SAMPLES`]).
pub fn median_interval(samples: &[f64]) -> Option<[f64; 2]> {
    let samples = finite(samples);
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let mut rng = SplitMix64::new(SEED);
    let mut scratch = Vec::with_capacity(samples.len());
    percentile_interval((0..RESAMPLES).map(|_| resampled_median(&samples, &mut scratch, &mut rng)).collect())
}

/// The 95% bootstrap interval of median(`subject`) / median(`reference`), each side resampled on its
/// own (the two series are independent launches). `None` when a side has fewer than
/// [`MIN_SAMPLES`] samples or its medians are not positive.
pub fn ratio_interval(subject: &[f64], reference: &[f64]) -> Option<[f64; 2]> {
    let (subject, reference) = (finite(subject), finite(reference));
    if subject.len() < MIN_SAMPLES || reference.len() < MIN_SAMPLES {
        return None;
    }
    let mut rng = SplitMix64::new(SEED);
    let (mut a, mut b) = (Vec::with_capacity(subject.len()), Vec::with_capacity(reference.len()));
    let estimates = (0..RESAMPLES)
        .map(|_| {
            let top = resampled_median(&subject, &mut a, &mut rng);
            let bottom = resampled_median(&reference, &mut b, &mut rng);
            if bottom > 0.0 { top / bottom } else { f64::NAN }
        })
        .collect::<Vec<_>>();
    // A resample whose reference median is 0 has no ratio: if many do, there is no interval.
    if estimates.iter().filter(|e| e.is_finite()).count() < RESAMPLES * 99 / 100 {
        return None;
    }
    percentile_interval(estimates)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` draws from a normal distribution (Box–Muller).
    fn normal(rng: &mut SplitMix64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (1.0 - rng.unit(), rng.unit());
                mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect()
    }

    #[test]
    fn the_generator_is_uniform_enough_and_reproducible() {
        let mut rng = SplitMix64::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
        assert_eq!(SplitMix64::new(7).next_u64(), SplitMix64::new(7).next_u64());
    }

    #[test]
    fn the_median_interval_of_a_normal_sample_has_the_expected_width_and_centre() {
        let samples = normal(&mut SplitMix64::new(42), 400, 10.0, 1.0);
        let [lo, hi] = median_interval(&samples).unwrap();
        assert!(lo < 10.0 && 10.0 < hi, "[{lo}, {hi}]");
        // The median's standard error is sqrt(pi/2) sd / sqrt(n): a 95% interval about 0.25 wide.
        let expected = 2.0 * 1.96 * (std::f64::consts::PI / 2.0).sqrt() / 400f64.sqrt();
        assert!((hi - lo) > 0.6 * expected && (hi - lo) < 1.5 * expected, "width {} vs {expected}", hi - lo);
    }

    #[test]
    fn the_median_interval_covers_the_true_median_about_95_times_in_100() {
        let mut rng = SplitMix64::new(2026);
        // An exponential distribution (skewed, like launch times): median ln 2.
        let truth = std::f64::consts::LN_2;
        let trials = 200;
        let covered = (0..trials)
            .filter(|_| {
                let samples: Vec<f64> = (0..40).map(|_| -(1.0 - rng.unit()).ln()).collect();
                let [lo, hi] = median_interval(&samples).unwrap();
                lo <= truth && truth <= hi
            })
            .count();
        assert!((176..=198).contains(&covered), "{covered} of {trials} intervals covered the median");
    }

    #[test]
    fn a_ratio_interval_finds_a_real_difference_and_not_a_false_one() {
        let mut rng = SplitMix64::new(9);
        let slow = normal(&mut rng, 30, 20.0, 2.0);
        let fast = normal(&mut rng, 30, 10.0, 1.0);
        let [lo, hi] = ratio_interval(&slow, &fast).unwrap();
        assert!(lo > 1.0 && lo < 2.0 && 2.0 < hi, "[{lo}, {hi}]");
        let same_a = normal(&mut rng, 30, 10.0, 1.0);
        let same_b = normal(&mut rng, 30, 10.0, 1.0);
        let [lo, hi] = ratio_interval(&same_a, &same_b).unwrap();
        assert!(lo < 1.0 && 1.0 < hi, "[{lo}, {hi}]");
    }

    #[test]
    fn too_few_samples_or_a_zero_reference_give_no_interval() {
        assert_eq!(median_interval(&[1.0]), None);
        assert_eq!(ratio_interval(&[1.0, 2.0], &[3.0]), None);
        assert_eq!(ratio_interval(&[1.0, 2.0], &[0.0, 0.0]), None);
        assert_eq!(median_interval(&[5.0, 5.0, 5.0]), Some([5.0, 5.0]));
    }
}
