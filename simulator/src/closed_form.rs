//! Closed-form durability models the simulation is validated against.
//!
//! Owns the binomial model of K-of-N stripes under independent node loss
//! (no repair): a stripe of width W survives while at least K of its packets
//! do, so it is lost with probability P[X > W-K], X ~ Binomial(W, p).
//! With repair, a window model of the same stripes
//! ([`stripe_loss_with_repair`]). This module must not simulate anything.

/// P[X >= at_least] for X ~ Binomial(n, p), summed in log space (n up to 255 and beyond).
pub fn binomial_tail(n: u32, at_least: u32, p: f64) -> f64 {
    if at_least == 0 {
        return 1.0;
    }
    if at_least > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let ln_choose = |k: u32| {
        libm::lgamma(f64::from(n) + 1.0)
            - libm::lgamma(f64::from(k) + 1.0)
            - libm::lgamma(f64::from(n - k) + 1.0)
    };
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    (at_least..=n)
        .map(|k| (ln_choose(k) + f64::from(k) * lp + f64::from(n - k) * lq).exp())
        .sum::<f64>()
        .min(1.0)
}

/// Probability that a stripe of `width` packets, any `k` of which rebuild it,
/// is lost when each packet's node is lost independently with probability `p`.
pub fn stripe_loss_probability(width: u32, k: u32, p: f64) -> f64 {
    binomial_tail(width, width.saturating_sub(k) + 1, p)
}

/// Probability that an object of `stripes` independent stripes loses at least one.
pub fn object_loss_probability(width: u32, k: u32, stripes: u32, p: f64) -> f64 {
    let q = stripe_loss_probability(width, k, p);
    1.0 - (1.0 - q).powf(f64::from(stripes))
}

/// Probability that a stripe is lost over `horizon_ms` under repair, when
/// each node is lost at the constant rate `rate_per_ms` and a lost packet
/// is rebuilt `window_ms` after its loss (the grace period plus the
/// checker's period). The stripe is taken to sit with `threshold - 1`
/// packets gone (the most the repair policy leaves alone: exact for
/// threshold 1, an upper bound above) and to be lost when more of its other
/// packets fail within one window than it can spare:
/// P[window] = P[X ≥ W - K - (t - 1) + 1], X ~ Binomial(W - (t - 1), 1 - e^(-rate·window)),
/// over horizon / window independent windows.
pub fn stripe_loss_with_repair(
    width: u32,
    k: u32,
    threshold: u32,
    rate_per_ms: f64,
    window_ms: f64,
    horizon_ms: f64,
) -> f64 {
    if window_ms <= 0.0 || rate_per_ms <= 0.0 {
        return 0.0;
    }
    let waiting = threshold.saturating_sub(1);
    let remaining = width.saturating_sub(waiting);
    let spare = width.saturating_sub(k).saturating_sub(waiting);
    let p = 1.0 - (-rate_per_ms * window_ms).exp();
    let per_window = binomial_tail(remaining, spare + 1, p);
    let windows = (horizon_ms / window_ms).max(1.0);
    (1.0 - (1.0 - per_window).powf(windows)).clamp(0.0, 1.0)
}

/// d/dp of [`object_loss_probability`], by central difference (for error propagation).
pub fn object_loss_slope(width: u32, k: u32, stripes: u32, p: f64) -> f64 {
    let h = 1e-5_f64.min(p / 2.0).min((1.0 - p) / 2.0).max(1e-9);
    (object_loss_probability(width, k, stripes, p + h)
        - object_loss_probability(width, k, stripes, p - h))
        / (2.0 * h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        // 4+2, p = 0.1: P[X >= 3] = 1 - (0.9^6 + 6*0.1*0.9^5 + 15*0.01*0.9^4).
        let expected =
            1.0 - (0.9f64.powi(6) + 6.0 * 0.1 * 0.9f64.powi(5) + 15.0 * 0.01 * 0.9f64.powi(4));
        assert!((stripe_loss_probability(6, 4, 0.1) - expected).abs() < 1e-12);
        // Three replicas: lost only if all three go.
        assert!((stripe_loss_probability(3, 1, 0.2) - 0.008).abs() < 1e-12);
        assert_eq!(stripe_loss_probability(6, 4, 0.0), 0.0);
        assert_eq!(stripe_loss_probability(6, 4, 1.0), 1.0);
        let two = object_loss_probability(6, 4, 2, 0.1);
        assert!((two - (1.0 - (1.0 - expected).powi(2))).abs() < 1e-12);
    }

    #[test]
    fn repair_shrinks_loss_and_a_later_threshold_or_longer_window_grows_it() {
        let year = 365.0 * 86_400_000.0;
        let rate = -(1.0f64 - 0.2).ln() / year;
        let hour = 3_600_000.0;
        let eager = stripe_loss_with_repair(6, 4, 1, rate, 4.0 * hour, year);
        assert!(eager > 0.0 && eager < stripe_loss_probability(6, 4, 0.2) / 1000.0);
        assert!(stripe_loss_with_repair(6, 4, 2, rate, 4.0 * hour, year) > eager);
        assert!(stripe_loss_with_repair(6, 4, 1, rate, 24.0 * hour, year) > eager);
        // A window as long as the horizon is the model without repair.
        let none = stripe_loss_with_repair(6, 4, 1, rate, year, year);
        assert!((none - stripe_loss_probability(6, 4, 0.2)).abs() < 1e-12);
    }

    #[test]
    fn whole_distribution_sums_to_one() {
        let total = binomial_tail(200, 0, 0.3);
        assert_eq!(total, 1.0);
        let split = binomial_tail(200, 61, 0.3) + (1.0 - binomial_tail(200, 61, 0.3));
        assert!((split - 1.0).abs() < 1e-12);
        assert!((binomial_tail(200, 1, 0.3) - (1.0 - 0.7f64.powi(200))).abs() < 1e-9);
    }
}
