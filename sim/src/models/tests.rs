use super::weights::{binomial_tails, ALPHA};

#[test]
fn binomial_tails_are_exact_for_small_cases() {
    // Bin(4, 0.5): P(X<=1) = 5/16, P(X>=1) = 15/16.
    let (low, high) = binomial_tails(4, 1, 0.5);
    assert!((low - 5.0 / 16.0).abs() < 1e-12, "{low}");
    assert!((high - 15.0 / 16.0).abs() < 1e-12, "{high}");
    // Both tails include k itself.
    let (low, high) = binomial_tails(10, 3, 0.3);
    assert!(low > 0.5 && high > 0.5);
}

#[test]
fn a_provider_never_drawn_is_flagged_from_about_sixty_draws() {
    // 0 of n to a provider of weight 0.3: the lower tail is 0.7^n.
    assert!(binomial_tails(40, 0, 0.3).0 > ALPHA);
    assert!(binomial_tails(60, 0, 0.3).0 < ALPHA);
    // A fair share of 400 draws is nowhere near the bound.
    let (low, high) = binomial_tails(400, 120, 0.3);
    assert!(low > 0.4 && high > 0.4);
    // Tails far below f64's smallest normal still compare.
    assert!(binomial_tails(5_000, 0, 0.3).0 < ALPHA);
}
