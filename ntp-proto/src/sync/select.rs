//! Source selection: reject falsetickers by intersecting the sources' correctness
//! intervals (a majority must agree), pick the best of the rest without flapping, and
//! combine the good ones.

use super::regress::Estimate;

/// One source as selection sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// The caller's index for the source.
    pub id: usize,
    /// Its current estimate; `None` before its first sample.
    pub est: Option<Estimate>,
    /// Whether it answered any of its last eight polls.
    pub reachable: bool,
    /// `prefer` option.
    pub prefer: bool,
    /// `noselect` option.
    pub noselect: bool,
    /// Polled but not answered yet, at start: it still counts toward the majority, so the
    /// first source to answer cannot carry the vote alone.
    pub pending: bool,
}

/// Selection settings (chrony's directives of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectParams {
    /// `minsources`.
    pub min_sources: usize,
    /// `maxdistance`, seconds.
    pub max_distance: f64,
    /// `reselectdist`, seconds.
    pub reselect_distance: f64,
    /// `combinelimit`.
    pub combine_limit: f64,
    /// `stratumweight`, seconds of distance per stratum.
    pub stratum_weight: f64,
    /// `maxjitter`, seconds.
    pub max_jitter: f64,
}

impl Default for SelectParams {
    fn default() -> Self {
        SelectParams {
            min_sources: 1,
            max_distance: 3.0,
            reselect_distance: 1e-4,
            combine_limit: 3.0,
            stratum_weight: 1e-3,
            max_jitter: 1.0,
        }
    }
}

/// A source's state after selection, as chronyc shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// The selected source ('*').
    Selected,
    /// Combined with the selected one ('+').
    Combined,
    /// A truechimer too far from the selected one to combine ('-').
    NotCombined,
    /// Its interval misses the majority's ('x').
    Falseticker,
    /// Too much jitter ('~').
    TooVariable,
    /// Root distance over `maxdistance` ('?').
    TooFar,
    /// Not answering ('?').
    Unreachable,
    /// `noselect` ('?').
    NoSelect,
    /// No sample yet, or nothing could be selected ('?').
    Unselectable,
}

impl SourceState {
    /// chronyc's state column.
    pub fn symbol(self) -> char {
        match self {
            SourceState::Selected => '*',
            SourceState::Combined => '+',
            SourceState::NotCombined => '-',
            SourceState::Falseticker => 'x',
            SourceState::TooVariable => '~',
            _ => '?',
        }
    }
}

/// How selection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A source was selected.
    Selected,
    /// The sources disagree and no majority agrees.
    NoMajority,
    /// Fewer selectable sources than `minsources`.
    NotEnoughSources,
    /// No source is selectable at all.
    NoSelectable,
}

/// The combined estimate of the selected sources.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Combined {
    /// Offset (true minus local), seconds.
    pub offset: f64,
    /// Its standard error, seconds.
    pub offset_sd: f64,
    /// Local clock's frequency error against the sources (positive: slow), ratio.
    pub frequency: f64,
    /// Frequency uncertainty, ratio.
    pub skew: f64,
    /// Samples behind the selected source's estimate.
    pub samples: usize,
    /// Root delay via the selected source, seconds.
    pub root_delay: f64,
    /// Root dispersion via the selected source, seconds.
    pub root_dispersion: f64,
    /// The selected source's stratum.
    pub stratum: u8,
    /// The selected source's leap indicator.
    pub leap: u8,
}

/// The result of one selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Every candidate's state, in input order.
    pub states: Vec<(usize, SourceState)>,
    /// The selected source.
    pub selected: Option<usize>,
    /// The combination of the selected and combined sources.
    pub combined: Option<Combined>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Relative hysteresis on top of `reselectdist`: distances of equally good sources move
/// by a good part of themselves as their best samples enter and leave the window, and a
/// fixed margin alone lets the selection flap between them.
const RESELECT_RATIO: f64 = 0.25;

fn score(e: &Estimate, p: &SelectParams) -> f64 {
    e.distance() + e.stratum as f64 * p.stratum_weight
}

/// Selects among `cands`; `previous` is the source selected last time.
pub fn select(cands: &[Candidate], p: &SelectParams, previous: Option<usize>) -> Selection {
    let mut states: Vec<(usize, SourceState)> = Vec::with_capacity(cands.len());
    let mut ok: Vec<(usize, Estimate, bool)> = Vec::new();
    for c in cands {
        let st = match c.est {
            _ if c.noselect => SourceState::NoSelect,
            _ if !c.reachable => SourceState::Unreachable,
            None => SourceState::Unselectable,
            Some(e) if e.distance() > p.max_distance => SourceState::TooFar,
            Some(e) if e.std_dev > p.max_jitter => SourceState::TooVariable,
            Some(e) => {
                ok.push((c.id, e, c.prefer));
                SourceState::Unselectable
            }
        };
        states.push((c.id, st));
    }
    let set = |states: &mut Vec<(usize, SourceState)>, id: usize, st: SourceState| {
        if let Some(s) = states.iter_mut().find(|s| s.0 == id) {
            s.1 = st;
        }
    };
    let fail = |states: Vec<(usize, SourceState)>, outcome| Selection {
        states,
        selected: None,
        combined: None,
        outcome,
    };
    if ok.is_empty() {
        return fail(states, Outcome::NoSelectable);
    }
    if ok.len() < p.min_sources {
        return fail(states, Outcome::NotEnoughSources);
    }

    // Intersection: the region covered by the most intervals (sweep over endpoints; at
    // equal positions starts come first so touching intervals count as overlapping).
    let mut ends: Vec<(f64, i32)> = Vec::with_capacity(2 * ok.len());
    for (_, e, _) in &ok {
        ends.push((e.offset - e.distance(), 1));
        ends.push((e.offset + e.distance(), -1));
    }
    ends.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let (mut depth, mut best, mut lo, mut hi) = (0, 0, 0.0, 0.0);
    for (i, (x, d)) in ends.iter().enumerate() {
        depth += d;
        if *d > 0 && depth > best {
            best = depth;
            lo = *x;
            hi = ends.get(i + 1).map_or(*x, |e| e.0);
        }
    }
    let pending = cands
        .iter()
        .filter(|c| c.pending && c.est.is_none() && !c.noselect)
        .count();
    if (best as usize) * 2 <= ok.len() + pending {
        for (id, _, _) in &ok {
            set(&mut states, *id, SourceState::Unselectable);
        }
        return fail(states, Outcome::NoMajority);
    }
    let mut truechimers = Vec::new();
    for (id, e, prefer) in &ok {
        if e.offset + e.distance() >= lo && e.offset - e.distance() <= hi {
            truechimers.push((*id, *e, *prefer));
        } else {
            set(&mut states, *id, SourceState::Falseticker);
        }
    }

    // The best truechimer; preferred sources first; the previous one kept unless clearly worse.
    let any_prefer = truechimers.iter().any(|t| t.2);
    let pool = truechimers.iter().filter(|t| t.2 || !any_prefer);
    let Some(best_tc) = pool.min_by(|a, b| score(&a.1, p).total_cmp(&score(&b.1, p))) else {
        return fail(states, Outcome::NoSelectable);
    };
    let chosen = match previous.and_then(|prev| truechimers.iter().find(|t| t.0 == prev)) {
        Some(prev)
            if (prev.2 || !any_prefer)
                && score(&prev.1, p)
                    <= score(&best_tc.1, p)
                        + best_tc.1.distance() * RESELECT_RATIO
                        + p.reselect_distance =>
        {
            *prev
        }
        _ => *best_tc,
    };

    let limit = chosen.1.distance() * p.combine_limit;
    let (mut sw, mut so, mut sf, mut svar) = (0.0, 0.0, 0.0, 0.0);
    for (id, e, _) in &truechimers {
        let st = if *id == chosen.0 {
            SourceState::Selected
        } else if e.distance() <= limit {
            SourceState::Combined
        } else {
            SourceState::NotCombined
        };
        set(&mut states, *id, st);
        if st != SourceState::NotCombined {
            let w = 1.0 / e.distance().max(1e-9);
            sw += w;
            so += w * e.offset;
            sf += w * e.frequency;
            svar += w * w * e.offset_sd * e.offset_sd;
        }
    }
    let c = chosen.1;
    Selection {
        states,
        selected: Some(chosen.0),
        combined: Some(Combined {
            offset: so / sw,
            offset_sd: svar.sqrt() / sw,
            frequency: sf / sw,
            skew: c.skew,
            samples: c.samples,
            root_delay: c.root_delay,
            root_dispersion: c.root_dispersion,
            stratum: c.stratum,
            leap: c.leap,
        }),
        outcome: Outcome::Selected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(offset: f64, distance: f64, stratum: u8) -> Estimate {
        Estimate {
            offset,
            offset_sd: 1e-6,
            frequency: 0.0,
            skew: 1e-8,
            std_dev: 1e-6,
            root_delay: 0.0,
            root_dispersion: distance,
            stratum,
            leap: 0,
            samples: 8,
            last_time: 0.0,
        }
    }

    fn cand(id: usize, offset: f64, distance: f64) -> Candidate {
        Candidate {
            id,
            est: Some(est(offset, distance, 2)),
            reachable: true,
            prefer: false,
            noselect: false,
            pending: false,
        }
    }

    fn state(s: &Selection, id: usize) -> SourceState {
        s.states.iter().find(|x| x.0 == id).map(|x| x.1).unwrap()
    }

    #[test]
    fn a_falseticker_among_three_is_rejected() {
        let c = [
            cand(0, 0.001, 0.01),
            cand(1, -0.002, 0.01),
            cand(2, 1.0, 0.01),
        ];
        let s = select(&c, &SelectParams::default(), None);
        assert_eq!(s.outcome, Outcome::Selected);
        assert_eq!(state(&s, 2), SourceState::Falseticker);
        assert_ne!(s.selected, Some(2));
        let off = s.combined.unwrap().offset;
        assert!((off - (-0.0005)).abs() < 1e-9, "{off}");
    }

    #[test]
    fn two_that_disagree_have_no_majority() {
        let c = [cand(0, 0.0, 0.01), cand(1, 1.0, 0.01)];
        let s = select(&c, &SelectParams::default(), None);
        assert_eq!(s.outcome, Outcome::NoMajority);
        assert_eq!(s.selected, None);
        // Two that agree do.
        let c = [cand(0, 0.0, 0.01), cand(1, 0.015, 0.01)];
        assert_eq!(
            select(&c, &SelectParams::default(), None).outcome,
            Outcome::Selected
        );
    }

    #[test]
    fn sources_still_starting_count_toward_the_majority() {
        let mut c = [cand(0, 1.0, 0.01), cand(1, 0.0, 0.01), cand(2, 0.0, 0.01)];
        for x in &mut c[1..] {
            x.est = None;
            x.pending = true;
        }
        // The falseticker answered first: one of three is no majority.
        assert_eq!(
            select(&c, &SelectParams::default(), None).outcome,
            Outcome::NoMajority
        );
        c[1].est = Some(est(0.0, 0.01, 2));
        let s = select(&c, &SelectParams::default(), None);
        // Still one against one with one to come.
        assert_eq!(s.outcome, Outcome::NoMajority);
        c[2].est = Some(est(0.0, 0.01, 2));
        let s = select(&c, &SelectParams::default(), None);
        assert_eq!(
            (s.outcome, state(&s, 0)),
            (Outcome::Selected, SourceState::Falseticker)
        );
    }

    #[test]
    fn one_source_is_its_own_majority_but_minsources_can_forbid_it() {
        let c = [cand(0, 0.3, 0.01)];
        assert_eq!(select(&c, &SelectParams::default(), None).selected, Some(0));
        let p = SelectParams {
            min_sources: 2,
            ..Default::default()
        };
        assert_eq!(select(&c, &p, None).outcome, Outcome::NotEnoughSources);
    }

    #[test]
    fn best_is_lowest_stratum_then_distance_and_prefer_wins() {
        let mut c = [cand(0, 0.0, 0.002), cand(1, 0.0, 0.001), cand(2, 0.0, 0.01)];
        let s = select(&c, &SelectParams::default(), None);
        assert_eq!(s.selected, Some(1));
        assert_eq!(state(&s, 0), SourceState::Combined);
        assert_eq!(
            state(&s, 2),
            SourceState::NotCombined,
            "over 3x the selected distance"
        );
        c[2].prefer = true;
        assert_eq!(select(&c, &SelectParams::default(), None).selected, Some(2));
        c[2].est = Some(est(0.0, 0.001, 3));
        c[2].prefer = false;
        assert_eq!(select(&c, &SelectParams::default(), None).selected, Some(1));
    }

    #[test]
    fn the_previous_selection_is_kept_unless_clearly_worse() {
        let c = [cand(0, 0.0, 0.00134), cand(1, 0.0, 0.001)];
        assert_eq!(
            select(&c, &SelectParams::default(), Some(0)).selected,
            Some(0)
        );
        let c = [cand(0, 0.0, 0.0014), cand(1, 0.0, 0.001)];
        assert_eq!(
            select(&c, &SelectParams::default(), Some(0)).selected,
            Some(1)
        );
    }

    #[test]
    fn unusable_sources_get_their_state() {
        let mut c = [
            cand(0, 0.0, 0.01),
            cand(1, 0.0, 0.01),
            cand(2, 0.0, 5.0),
            cand(3, 0.0, 0.01),
            cand(4, 0.0, 0.01),
        ];
        c[1].reachable = false;
        c[3].noselect = true;
        c[4].est = None;
        let s = select(&c, &SelectParams::default(), None);
        assert_eq!(s.selected, Some(0));
        assert_eq!(
            s.states.iter().map(|x| x.1.symbol()).collect::<String>(),
            "*????"
        );
        assert_eq!(state(&s, 2), SourceState::TooFar);
        assert_eq!(state(&s, 1), SourceState::Unreachable);
        c[0].reachable = false;
        assert_eq!(
            select(&c, &SelectParams::default(), None).outcome,
            Outcome::NoSelectable
        );
    }
}
