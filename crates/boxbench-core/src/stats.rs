//! Summary statistics over repeated runs: what `boxbench run -n N` prints per phase, with the
//! median's bootstrap interval ([`crate::bootstrap`]) and hyperfine-like warnings about the samples.

use serde::{Deserialize, Serialize};

/// The fewest samples a 99th percentile is given for: below it, the nearest-rank p99 is just the
/// maximum (of 20 launches, the 20th), so only `max` is shown.
pub const P99_MIN_SAMPLES: usize = 100;

/// A sample's modified z-score (0.6745 (x − median) / MAD, Iglewicz and Hoaglin) beyond which it is
/// called an outlier.
pub const OUTLIER_Z: f64 = 3.5;

/// Count, median with its 95% interval, 99th percentile, minimum and maximum of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// The median's 95% bootstrap confidence interval (`None` below two samples).
    #[serde(default)]
    pub median_ci: Option<[f64; 2]>,
    /// 99th percentile, nearest-rank; only from [`P99_MIN_SAMPLES`] samples on (`None` below).
    pub p99: Option<f64>,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none (a phase no run observed).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Summary {
            n,
            median,
            median_ci: crate::bootstrap::median_interval(&sorted),
            p99: (n >= P99_MIN_SAMPLES).then(|| percentile(&sorted, 99.0)),
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// What a reader should know about `samples` (in launch order) before trusting their median, as
/// hyperfine warns: outliers (modified z-score beyond [`OUTLIER_Z`]) and a first launch slower than
/// every other and an outlier against them (caches, lazy set-up). `what` names the figure.
pub fn warnings(samples: &[f64], what: &str) -> Vec<String> {
    let samples: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    let mut found = Vec::new();
    if samples.len() < 3 {
        return found;
    }
    let z = |x: f64, of: &[f64]| {
        let median = median_of(of);
        let deviations: Vec<f64> = of.iter().map(|v| (v - median).abs()).collect();
        let mad = median_of(&deviations);
        if mad > 0.0 { 0.6745 * (x - median) / mad } else { 0.0 }
    };
    let outliers = samples.iter().filter(|&&x| z(x, &samples).abs() > OUTLIER_Z).count();
    if outliers > 0 {
        found.push(format!(
            "{what}: {outliers} of {} launches are statistical outliers (modified z-score > {OUTLIER_Z}); \
             other activity on the host may have disturbed them",
            samples.len()
        ));
    }
    let (first, rest) = (samples[0], &samples[1..]);
    if rest.iter().all(|&x| first > x) && z(first, rest) > OUTLIER_Z {
        found.push(format!(
            "{what}: the first launch ({first:.3}) was much slower than the rest (median {:.3}); \
             caches or lazy set-up may explain it: consider warm-up launches",
            median_of(rest)
        ));
    }
    found
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Nearest-rank percentile of an ascending, non-empty slice.
fn percentile(sorted: &[f64], pct: f64) -> f64 {
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_series_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn odd_and_even_medians() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn p99_is_nearest_rank_from_100_samples_only() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p99, Some(198.0));
        assert_eq!(Summary::of(&samples[..100]).unwrap().p99, Some(99.0));
        assert_eq!(Summary::of(&samples[..99]).unwrap().p99, None);
        assert_eq!(Summary::of(&[5.0, 7.0]).unwrap().p99, None);
    }

    #[test]
    fn the_median_comes_with_its_interval() {
        let s = Summary::of(&[10.0, 11.0, 9.0, 10.5, 9.5, 10.2, 9.8]).unwrap();
        let [lo, hi] = s.median_ci.unwrap();
        assert!(lo <= s.median && s.median <= hi && lo >= s.min && hi <= s.max, "{s:?}");
        assert_eq!(Summary::of(&[5.0]).unwrap().median_ci, None);
    }

    #[test]
    fn outliers_and_a_slow_first_launch_are_warned_about() {
        let steady = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.3, 10.1];
        assert!(warnings(&steady, "t").is_empty());
        let mut slow_first = vec![40.0];
        slow_first.extend(steady);
        let found = warnings(&slow_first, "time to marker");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("time to marker: 1 of 9 launches are statistical outliers"), "{found:?}");
        assert!(found[1].contains("the first launch (40.000) was much slower than the rest"), "{found:?}");
        let mut late_outlier = steady.to_vec();
        late_outlier.push(40.0);
        let found = warnings(&late_outlier, "t");
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
