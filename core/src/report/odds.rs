//! How likely a pattern of failures is by chance: the exact probabilities findings are judged
//! by (every one computed from counts, in logarithms, so that a million sessions neither
//! overflow nor round to nothing).
//!
//! The null hypothesis throughout: the failed sessions are a random draw from the sessions
//! that could have failed, whatever their subject, worker, target, time or concurrency.

/// `ln Γ(x)` for `x >= 0.5` (Lanczos, g = 7, 9 terms: about 15 correct digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `ln C(n, k)` (`-inf` when `k > n`).
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let (n, k) = (n as f64, k as f64);
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// The probability that `f` failures drawn at random among `n` sessions all fall among a
/// given `inside` of them: `C(inside, f) / C(n, f)`.
pub fn all_inside(inside: u64, f: u64, n: u64) -> f64 {
    if f > n {
        return 0.0;
    }
    (ln_choose(inside, f) - ln_choose(n, f)).exp()
}

/// The probability that `f` failures drawn at random among `n` sessions are exactly one given
/// set of `f`: `1 / C(n, f)`.
pub fn exactly(f: u64, n: u64) -> f64 {
    (-ln_choose(n, f)).exp()
}

/// The probability that every one of `groups` (sizes `n_i`) is all failed or all not when
/// each of their sessions fails with probability `p` on its own: `prod (p^n_i + (1-p)^n_i)`.
pub fn all_or_none(groups: impl IntoIterator<Item = u64>, p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut ln = 0.0;
    for n in groups {
        let n = n as f64;
        let (a, b) = (n * lp, n * lq);
        // ln(e^a + e^b) without overflow or underflow.
        let hi = a.max(b);
        if hi == f64::NEG_INFINITY {
            return 0.0;
        }
        ln += hi + ((a - hi).exp() + (b - hi).exp()).ln();
    }
    ln.exp()
}

/// The chance of `k` or more successes in `n` trials of probability `p` (`P(X >= k)`), exact
/// to about 14 digits. Past the mean the terms only shrink, so the sum stops once they no
/// longer count.
fn upper_tail(n: u64, k: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 || (k as f64) <= n as f64 * p {
        return 1.0;
    }
    let ratio = p / (1.0 - p);
    let mut term = (ln_choose(n, k) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp();
    let mut sum = 0.0;
    let mut i = k;
    loop {
        sum += term;
        if i == n || term <= sum * 1e-17 {
            break;
        }
        term *= (n - i) as f64 / (i + 1) as f64 * ratio;
        i += 1;
    }
    sum.min(1.0)
}

/// The two-sided chance of a count as far from the mean as `k` in `n` trials of probability
/// `p`: twice the smaller tail, at most 1.
pub fn binomial_two_sided(n: u64, k: u64, p: f64) -> f64 {
    let upper = upper_tail(n, k, p);
    // P(X <= k) = P(n - X >= n - k), n - X being binomial with 1 - p.
    let lower = upper_tail(n, n.saturating_sub(k), 1.0 - p);
    (2.0 * upper.min(lower)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-300)
    }

    #[test]
    fn gamma_and_choose_are_exact_where_they_can_be_checked() {
        // ln 10! and C(50, 20) are known exactly.
        assert!(close(ln_gamma(11.0), 3_628_800f64.ln()));
        assert!(close(ln_choose(50, 20).exp(), 47_129_212_243_960.0));
        assert_eq!(ln_choose(3, 4), f64::NEG_INFINITY);
        // Large arguments stay finite and consistent: C(n, 1) = n.
        assert!(close(ln_choose(10_000_000, 1), 10_000_000f64.ln()));
    }

    #[test]
    fn probabilities_of_patterns() {
        // 2 failures among 4 sessions, both in a given pair: 1 / 6.
        assert!(close(all_inside(2, 2, 4), 1.0 / 6.0));
        assert!(close(exactly(2, 4), 1.0 / 6.0));
        assert_eq!(all_inside(1, 2, 4), 0.0);
        // Two groups of 2 at p = 1/2: each all-or-none with chance 1/2.
        assert!(close(all_or_none([2, 2], 0.5), 0.25));
        // Groups of one session are always all-or-none.
        assert!(close(all_or_none([1; 100], 0.3), 1.0));
    }

    #[test]
    fn binomial_tails_match_their_sums() {
        // n = 10, p = 0.5: P(X >= 9) = 11 / 1024.
        assert!(close(upper_tail(10, 9, 0.5), 11.0 / 1024.0));
        assert!(close(binomial_two_sided(10, 9, 0.5), 22.0 / 1024.0));
        assert!(close(binomial_two_sided(10, 1, 0.5), 22.0 / 1024.0));
        assert_eq!(binomial_two_sided(10, 5, 0.5), 1.0);
        // 0 of 100 at p = 0.2: (0.8)^100, doubled.
        assert!(close(
            binomial_two_sided(100, 0, 0.2),
            2.0 * 0.8f64.powi(100)
        ));
        // A million trials does not take a million steps, and is still a probability.
        let p = binomial_two_sided(1_000_000, 201_000, 0.2);
        assert!(p > 0.0 && p < 0.05, "{p}");
    }
}
