//! The statistics under each source's estimate: a weighted straight-line fit of offset on
//! time that drops its oldest points while the residuals fail a runs test (the offset no
//! longer follows one line: the frequency wandered or the source stepped), and a two-factor
//! fit that finds how much of the delay variation shows up as offset (jitter asymmetry).
//!
//! The method is the one chrony describes for its source statistics; the constants are
//! standard statistical tables.

/// Fewest points a line is fitted to.
pub const MIN_POINTS: usize = 3;

/// The fit of `y = a + b·x` with its uncertainties.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineFit {
    /// Intercept at `x = 0`.
    pub a: f64,
    /// Slope.
    pub b: f64,
    /// Standard error of `a`.
    pub sd_a: f64,
    /// Standard error of `b`.
    pub sd_b: f64,
    /// Weighted variance of the residuals about the line, per point.
    pub variance: f64,
    /// Points dropped from the front (oldest) to pass the runs test.
    pub start: usize,
    /// Runs of equal residual signs among the points used.
    pub runs: usize,
    /// Degrees of freedom of the fit (points used minus two).
    pub dof: usize,
}

/// The least number of sign runs `n` residuals of a good fit show, at 5 % one-sided:
/// fewer runs mean the points bend away from the line. From the normal approximation of
/// the Wald-Wolfowitz runs distribution, which matches the exact table to within one run.
pub fn critical_runs(n: usize) -> usize {
    if n <= 7 {
        return 0;
    }
    let nf = n as f64;
    let sd = (nf * (nf - 2.0) / (4.0 * (nf - 1.0))).sqrt();
    let c = (nf / 2.0 + 1.0 - 1.645 * sd).floor() as usize;
    // The tabulated value for 54 points is one lower than the approximation.
    if n == 54 { c - 1 } else { c }
}

/// Student's t at 99.9 % two-sided (the 0.9995 quantile) for `dof` degrees of freedom.
pub fn t_coefficient(dof: usize) -> f64 {
    const T: [f64; 40] = [
        636.6, 31.6, 12.92, 8.61, 6.869, 5.959, 5.408, 5.041, 4.781, 4.587, 4.437, 4.318, 4.221,
        4.140, 4.073, 4.015, 3.965, 3.922, 3.883, 3.850, 3.819, 3.792, 3.768, 3.745, 3.725, 3.707,
        3.690, 3.674, 3.659, 3.646, 3.633, 3.622, 3.611, 3.601, 3.591, 3.582, 3.574, 3.566, 3.558,
        3.551,
    ];
    match dof {
        0 => T[0],
        1..=40 => T[dof - 1],
        _ => 3.5,
    }
}

/// Number of runs of equal (strict) sign in `r`; a zero always starts a new run.
pub fn count_runs(r: &[f64]) -> usize {
    if r.is_empty() {
        return 0;
    }
    1 + r
        .windows(2)
        .filter(|w| !((w[0] > 0.0 && w[1] > 0.0) || (w[0] < 0.0 && w[1] < 0.0)))
        .count()
}

/// Fits `y = a + b·x` to points `x`, `y` with variance-like weights `w` (larger: less
/// reliable). `x`, `y` and `w` hold the `n` current points last; the `extra` points before
/// them are older ones, no longer fitted but still tested: the residuals of a fit are
/// checked over up to twice as many points as it used. The oldest fitted points are
/// dropped until the residuals pass the runs test, or only `MIN_POINTS` (or `min_points`)
/// remain. `None` with fewer than `MIN_POINTS` current points.
pub fn find_best_line(
    x: &[f64],
    y: &[f64],
    w: &[f64],
    extra: usize,
    min_points: usize,
) -> Option<LineFit> {
    let total = x.len();
    let n = total.checked_sub(extra)?;
    if n < MIN_POINTS || y.len() != total || w.len() != n {
        return None;
    }
    // Indices into x/y are `extra + i` for current point i (i may be negative for old ones).
    let at = |i: isize| (extra as isize + i) as usize;
    let mut start = 0usize;
    loop {
        let (sw, mut sx) = ((start..n).map(|i| 1.0 / w[i]).sum::<f64>(), 0.0);
        for i in start..n {
            sx += x[at(i as isize)] / w[i];
        }
        let u = sx / sw;
        let (mut p, mut q, mut v) = (0.0, 0.0, 0.0);
        for i in start..n {
            let (xi, yi) = (x[at(i as isize)], y[at(i as isize)]);
            p += yi / w[i];
            q += yi * (xi - u) / w[i];
            v += (xi - u) * (xi - u) / w[i];
        }
        let b = if v > 0.0 { q / v } else { 0.0 };
        let a = p / sw - b * u;
        let used = n - start;
        // The line is tested over twice the points it was fitted to, older ones included.
        let rs = (n as isize - 2 * used as isize).max(-(extra as isize));
        let resid: Vec<f64> = (rs..n as isize)
            .map(|i| y[at(i)] - a - b * x[at(i)])
            .collect();
        let runs = count_runs(&resid);
        if runs > critical_runs(resid.len()) || used <= MIN_POINTS || used <= min_points {
            let dof = used - 2;
            let ss = (start..n)
                .map(|i| {
                    let r = y[at(i as isize)] - a - b * x[at(i as isize)];
                    r * r / w[i]
                })
                .sum::<f64>()
                / dof as f64;
            let sd_b = if v > 0.0 { (ss / v).sqrt() } else { 0.0 };
            let sd_a = (ss / sw + (u * sd_b).powi(2)).sqrt();
            let own: Vec<f64> = (start..n)
                .map(|i| y[at(i as isize)] - a - b * x[at(i as isize)])
                .collect();
            return Some(LineFit {
                a,
                b,
                sd_a,
                sd_b,
                variance: ss * used as f64 / sw,
                start,
                runs: count_runs(&own),
                dof,
            });
        }
        start += 1;
    }
}

/// Fits `y = b0 + b1·x1 + b2·x2` by unweighted least squares; `None` with fewer than four
/// points or when the two factors cannot be told apart.
pub fn fit_two_factors(x1: &[f64], x2: &[f64], y: &[f64]) -> Option<[f64; 3]> {
    let n = y.len();
    if n < 4 || x1.len() != n || x2.len() != n {
        return None;
    }
    let nf = n as f64;
    let (m1, m2, my) = (
        x1.iter().sum::<f64>() / nf,
        x2.iter().sum::<f64>() / nf,
        y.iter().sum::<f64>() / nf,
    );
    let (mut s11, mut s22, mut s12, mut s1y, mut s2y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let (d1, d2, dy) = (x1[i] - m1, x2[i] - m2, y[i] - my);
        s11 += d1 * d1;
        s22 += d2 * d2;
        s12 += d1 * d2;
        s1y += d1 * dy;
        s2y += d2 * dy;
    }
    let det = s11 * s22 - s12 * s12;
    // Nearly collinear factors: the split between them would be noise.
    if det == 0.0 || det.abs() * 1e10 <= (s11 * s22).abs() + (s12 * s12).abs() {
        return None;
    }
    let b1 = (s1y * s22 - s2y * s12) / det;
    let b2 = (s2y * s11 - s1y * s12) / det;
    Some([my - b1 * m1 - b2 * m2, b1, b2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_runs_follow_the_table() {
        // Spot values of the 5 % lower critical number of runs.
        for (n, c) in [
            (7, 0),
            (8, 2),
            (10, 3),
            (20, 7),
            (40, 15),
            (54, 21),
            (64, 26),
            (128, 55),
        ] {
            assert_eq!(critical_runs(n), c, "n = {n}");
        }
    }

    #[test]
    fn a_line_is_found_and_its_errors_scale_with_the_noise() {
        let x: Vec<f64> = (0..20).map(|i| -(19 - i) as f64 * 16.0).collect();
        let noise = [
            1, -1, 1, 1, -1, -1, 1, -1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, -1, -1,
        ];
        let y: Vec<f64> = x
            .iter()
            .zip(noise)
            .map(|(x, e)| 0.01 + 2e-6 * x + 1e-6 * e as f64)
            .collect();
        let f = find_best_line(&x, &y, &[1.0; 20], 0, 3).unwrap();
        assert!((f.a - 0.01).abs() < 1e-6, "{f:?}");
        assert!((f.b - 2e-6).abs() < 1e-8, "{f:?}");
        assert_eq!(f.start, 0, "random residuals pass the runs test");
        assert!(f.sd_a > 1e-7 && f.sd_a < 1e-6, "{f:?}");
        assert_eq!(f.dof, 18);
    }

    #[test]
    fn points_from_before_a_bend_are_dropped() {
        // A frequency change half way: the line through everything leaves long runs.
        let x: Vec<f64> = (0..32).map(|i| -(31 - i) as f64).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let e = if i % 2 == 0 { 1e-7 } else { -1e-7 };
                if x < -15.0 { 1e-4 * (x + 15.0) + e } else { e }
            })
            .collect();
        let f = find_best_line(&x, &y, &[1.0; 32], 0, 3).unwrap();
        assert!(f.start >= 14, "{f:?}");
        assert!(f.b.abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn two_factors_are_separated() {
        let x1: Vec<f64> = (0..10).map(f64::from).collect();
        let x2: Vec<f64> = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0].to_vec();
        let y: Vec<f64> = (0..10).map(|i| 1.0 + 0.5 * x1[i] - 0.3 * x2[i]).collect();
        let [b0, b1, b2] = fit_two_factors(&x1, &x2, &y).unwrap();
        assert!((b0 - 1.0).abs() < 1e-9 && (b1 - 0.5).abs() < 1e-9 && (b2 + 0.3).abs() < 1e-9);
        assert!(fit_two_factors(&x1, &x1, &y).is_none(), "collinear");
    }
}
