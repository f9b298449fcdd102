//! Source selection, as chrony does it: classify each source, intersect the correctness
//! intervals of the good ones (a majority must agree), keep the admissible ones, pick the
//! best by a score with hysteresis, and combine the admissible sources that are close
//! enough to the selected one. The clock is updated only when the selected source has a
//! new sample.

use super::sourcestats::{SelectionData, TrackingData};

/// Selection settings (chrony's directives of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectParams {
    /// `minsources`.
    pub min_sources: usize,
    /// `maxdistance`, seconds.
    pub max_distance: f64,
    /// `maxjitter`, seconds.
    pub max_jitter: f64,
    /// `reselectdist`, seconds.
    pub reselect_distance: f64,
    /// `stratumweight`, seconds of distance per stratum.
    pub stratum_weight: f64,
    /// `combinelimit`.
    pub combine_limit: f64,
    /// `maxclockerror`, ratio: how fast an unchecked clock may drift.
    pub max_clock_error: f64,
    /// `minstratum` and the highest stratum accepted.
    pub min_stratum: u8,
    /// Highest stratum a source may have.
    pub max_stratum: u8,
    /// `local ... orphan`: the local stratum, at and above which sources are orphans
    /// (serving local time, not real time).
    pub orphan_stratum: Option<u8>,
}

impl Default for SelectParams {
    fn default() -> Self {
        SelectParams {
            min_sources: 1,
            max_distance: 3.0,
            max_jitter: 1.0,
            reselect_distance: 1e-4,
            stratum_weight: 1e-3,
            combine_limit: 3.0,
            max_clock_error: 1e-6,
            min_stratum: 0,
            max_stratum: 15,
            orphan_stratum: None,
        }
    }
}

/// Score beyond which another source replaces the selected one.
const SCORE_LIMIT: f64 = 10.0;
/// How long a source found distant stays out of the combination (updates).
const DISTANT_PENALTY: i32 = 32;
/// Updates in a row a source may stay bad before it is reported for replacement.
pub const BAD_UPDATES_LIMIT: u32 = 4;

/// A source's state after selection, as chronyc shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// The selected source ('*').
    Selected,
    /// Combined with the selected one ('+').
    Combined,
    /// Admissible, but too far from the selected one to combine ('-').
    NotCombined,
    /// Admissible, but others are preferred ('-').
    NotPreferred,
    /// Selected but waiting for a new sample ('-').
    WaitsUpdate,
    /// Its interval misses the majority's ('x').
    Falseticker,
    /// Too much jitter ('~').
    TooVariable,
    /// Root distance over `maxdistance` ('?').
    TooFar,
    /// Silent for longer than the others have samples ('?').
    Stale,
    /// Outside the trusted sources' interval ('?').
    Untrusted,
    /// Fewer agreeing sources than `minsources`, or no `require` source ('?').
    WaitsSources,
    /// Not enough samples yet ('?').
    NotEnoughSamples,
    /// It says it is not synchronised ('?').
    Unsynchronised,
    /// Its stratum is outside the allowed range ('?').
    BadStratum,
    /// `noselect` ('?').
    NoSelect,
    /// Not answering, nothing known ('?').
    Unreachable,
    /// At or above the orphan stratum: it serves local time, not real time ('?').
    Orphan,
}

impl SourceState {
    /// chronyc's `sources` state column.
    pub fn symbol(self) -> char {
        match self {
            SourceState::Selected => '*',
            SourceState::Combined => '+',
            SourceState::NotCombined | SourceState::NotPreferred | SourceState::WaitsUpdate => '-',
            SourceState::Falseticker => 'x',
            SourceState::TooVariable => '~',
            _ => '?',
        }
    }

    /// chronyc's `selectdata` state letter.
    pub fn select_letter(self) -> char {
        match self {
            SourceState::Selected => '*',
            SourceState::Combined => '+',
            SourceState::NotCombined => 'D',
            SourceState::NotPreferred => 'P',
            SourceState::WaitsUpdate => 'U',
            SourceState::Falseticker => 'x',
            SourceState::TooVariable => '~',
            SourceState::TooFar => 'd',
            SourceState::Stale => 'S',
            SourceState::Untrusted => 'T',
            SourceState::NotEnoughSamples | SourceState::Unreachable => 'M',
            SourceState::Unsynchronised => 's',
            SourceState::BadStratum => 'r',
            SourceState::WaitsSources => 'W',
            SourceState::NoSelect => 'N',
            SourceState::Orphan => 'O',
        }
    }

    /// Whether this state counts against a source that keeps it (a pool replaces it).
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            SourceState::Falseticker
                | SourceState::TooFar
                | SourceState::BadStratum
                | SourceState::TooVariable
        )
    }
}

/// One source as selection sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Its interval and quality now; `None` before it has enough samples.
    pub data: Option<SelectionData>,
    /// Its regression's estimate.
    pub tracking: Option<TrackingData>,
    /// Reachability register and how many of its bits have been filled.
    pub reach: u8,
    /// Bits of the register filled so far (up to 8).
    pub reach_size: u8,
    /// Polls in a row without an answer.
    pub unreachable_run: u32,
    /// `noselect`, `prefer`, `trust`, `require`.
    pub noselect: bool,
    /// `prefer`.
    pub prefer: bool,
    /// `trust`.
    pub trust: bool,
    /// `require`.
    pub require: bool,
    /// New samples since the clock was last updated.
    pub updates: u32,
    /// Its reference id (from its address), for the orphan election.
    pub ref_id: u32,
    /// The reference id of our own address towards it, once known.
    pub local_ref_id: Option<u32>,
}

/// What selection keeps about a source from one run to the next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    /// Its state after the last run.
    pub state: SourceState,
    /// Its score against the selected source.
    pub score: f64,
    /// Updates it stays out of the combination.
    pub distant: i32,
    /// Its own updates in a row it was bad.
    pub bad_updates: u32,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            state: SourceState::Unreachable,
            score: 1.0,
            distant: 0,
            bad_updates: 0,
        }
    }
}

/// The combined estimate of the selected sources.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Combined {
    /// Local time the estimate is for.
    pub ref_time: f64,
    /// Offset (true minus local) at `ref_time`, seconds.
    pub offset: f64,
    /// Its standard error, including how far the combined sources disagree.
    pub offset_sd: f64,
    /// Rate at which the offset grows (positive: the local clock runs slow), ratio.
    pub frequency: f64,
    /// Its standard error.
    pub frequency_sd: f64,
    /// Its 99.9 % bound.
    pub skew: f64,
    /// Root delay via the selected source, seconds.
    pub root_delay: f64,
    /// Root dispersion via the selected source at `ref_time`, seconds.
    pub root_dispersion: f64,
    /// The selected source's stratum.
    pub stratum: u8,
    /// Sources combined.
    pub combined: usize,
}

/// Why nothing could be selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSelection {
    /// No source is selectable at all.
    NoSelectable,
    /// The sources disagree and no majority agrees.
    NoMajority {
        /// Sources in the largest agreeing group.
        agree: usize,
        /// Selectable sources.
        of: usize,
    },
    /// Fewer agreeing sources than `minsources`, or none of the `require` ones.
    WaitsSources,
    /// Some sources are one sample from selectable: wait for them.
    WaitsStats,
}

/// The result of one selection.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing selected.
    None(NoSelection),
    /// `selected` stays (or becomes) the reference; with a new sample from it, `update`.
    Selected {
        /// The selected source.
        selected: usize,
        /// The estimate to update the clock with, when the selected source has a new sample.
        update: Option<Combined>,
        /// The leap indicator a majority of the admissible sources announce.
        leap: u8,
    },
}

/// One interval endpoint.
#[derive(Clone, Copy)]
struct Endpoint {
    at: f64,
    low: bool,
    trusted: bool,
}

/// Runs selection over `cands` (indexed like `mem`), `previous` being the selected source
/// and `updated` the source that just gave a sample, if any.
pub fn select(
    cands: &[Candidate],
    mem: &mut [Memory],
    params: &SelectParams,
    previous: Option<usize>,
    updated: Option<usize>,
) -> Outcome {
    let outcome = select_states(cands, mem, params, previous, updated);
    count_bad_updates(mem, updated);
    outcome
}

#[allow(clippy::too_many_lines)]
fn select_states(
    cands: &[Candidate],
    mem: &mut [Memory],
    params: &SelectParams,
    previous: Option<usize>,
    updated: Option<usize>,
) -> Outcome {
    // Step 1: classify.
    let mut ok: Vec<usize> = Vec::new();
    let mut stats_reach = 0u8;
    let mut bad_stats = false;
    let mut data: Vec<Option<SelectionData>> = vec![None; cands.len()];
    let mut max_reach_ago = 0.0f64;
    for (i, c) in cands.iter().enumerate() {
        let state = if c.noselect {
            SourceState::NoSelect
        } else if let Some(mut d) = c.data {
            // A source without new samples ages: its interval widens by how far an
            // unchecked clock may drift in the time it has been silent.
            if d.first_sample_ago < 2.0 * d.last_sample_ago {
                let extra = params.max_clock_error * (2.0 * d.last_sample_ago - d.first_sample_ago);
                d.root_distance += extra;
                d.lo -= extra;
                d.hi += extra;
            }
            data[i] = Some(d);
            if d.leap == ntp_common::wire::LEAP_UNSYNC {
                SourceState::Unsynchronised
            } else if d.stratum < params.min_stratum || d.stratum > params.max_stratum {
                SourceState::BadStratum
            } else if d.root_distance > params.max_distance || d.lo > d.hi {
                SourceState::TooFar
            } else if d.std_dev > params.max_jitter {
                SourceState::TooVariable
            } else {
                if c.reach != 0 {
                    max_reach_ago = max_reach_ago.max(d.first_sample_ago);
                }
                ok.push(i);
                SourceState::Combined
            }
        } else {
            bad_stats = true;
            stats_reach = stats_reach.max(c.reach);
            if c.reach == 0 {
                SourceState::Unreachable
            } else {
                SourceState::NotEnoughSamples
            }
        };
        mem[i].state = state;
    }
    // Sources silent for longer than any reachable one has samples are stale. With
    // `local orphan`, sources at the local stratum serve local time, and those above it
    // follow one that does: neither is real time. When nothing else is selectable, the
    // orphan with the lowest reference id is followed if it is below ours: servers that
    // poll each other settle on one serving its local time and the rest following it.
    let mut cand: Vec<usize> = Vec::new();
    let mut orphan: Option<usize> = None;
    for &i in &ok {
        let c = &cands[i];
        let d = data[i].unwrap_or_else(|| unreachable!("classified OK with data"));
        if c.reach == 0 && (d.last_sample_ago > max_reach_ago || c.unreachable_run > 100_000) {
            mem[i].state = SourceState::Stale;
        } else if let Some(os) = params.orphan_stratum
            && d.stratum >= os
        {
            mem[i].state = SourceState::Orphan;
            if d.stratum == os && c.reach != 0 && orphan.is_none_or(|o| c.ref_id < cands[o].ref_id)
            {
                orphan = Some(i);
            }
        } else {
            cand.push(i);
        }
    }
    if cand.is_empty()
        && let Some(o) = orphan
        && cands[o].local_ref_id.is_some_and(|l| cands[o].ref_id < l)
    {
        mem[o].state = SourceState::Combined;
        cand.push(o);
    }

    // Wait for sources that are one sample behind the others at start.
    let (cand_reach, cand_size) = cand.iter().fold((0u8, 0u8), |(r, s), &i| {
        (r.max(cands[i].reach), s.max(cands[i].reach_size))
    });
    if bad_stats
        && !cand.is_empty()
        && previous.is_none()
        && cand_size < 8
        && cand_reach >> 1 == stats_reach
    {
        return Outcome::None(NoSelection::WaitsStats);
    }
    if cand.is_empty() {
        return Outcome::None(NoSelection::NoSelectable);
    }

    // Step 2: the interval the most sources agree on.
    let mut ends: Vec<Endpoint> = Vec::with_capacity(2 * cand.len());
    for &i in &cand {
        let d = data[i].unwrap_or_else(|| unreachable!("candidates have data"));
        let trusted = cands[i].trust;
        ends.push(Endpoint {
            at: d.lo,
            low: true,
            trusted,
        });
        ends.push(Endpoint {
            at: d.hi,
            low: false,
            trusted,
        });
    }
    ends.sort_by(|a, b| a.at.total_cmp(&b.at).then(b.low.cmp(&a.low)));
    let (mut depth, mut tdepth, mut best_depth, mut best_tdepth) = (0usize, 0usize, 0usize, 0usize);
    let (mut best_lo, mut best_hi, mut best_tlo, mut best_thi) = (0.0, 0.0, 0.0, 0.0);
    for e in &ends {
        if e.low {
            depth += 1;
            if e.trusted {
                tdepth += 1;
            }
            if tdepth > best_tdepth || (tdepth == best_tdepth && depth > best_depth) {
                if tdepth > best_tdepth {
                    best_tdepth = tdepth;
                    best_tlo = e.at;
                }
                best_depth = depth;
                best_lo = e.at;
            }
        } else {
            if tdepth == best_tdepth {
                if depth == best_depth {
                    best_hi = e.at;
                }
                best_thi = e.at;
            }
            if e.trusted {
                tdepth -= 1;
            }
            depth -= 1;
        }
    }
    let trusted_count = cand.iter().filter(|&&i| cands[i].trust).count();
    let (agree, of) = if best_tdepth > 0 {
        (best_tdepth, trusted_count)
    } else {
        (best_depth, cand.len())
    };
    if agree <= of / 2 {
        for &i in &cand {
            mem[i].state = SourceState::Falseticker;
        }
        return Outcome::None(NoSelection::NoMajority { agree, of });
    }
    let mut admissible: Vec<usize> = Vec::new();
    for &i in &cand {
        let d = data[i].unwrap_or_else(|| unreachable!("candidates have data"));
        let contains = d.lo <= best_lo && d.hi >= best_hi;
        let inside = d.lo >= best_lo && d.hi <= best_hi;
        if !(contains || inside) {
            mem[i].state = SourceState::Falseticker;
        } else if best_tdepth > 0 && !cands[i].trust && (d.lo < best_tlo || d.hi > best_thi) {
            mem[i].state = SourceState::Untrusted;
        } else {
            admissible.push(i);
        }
    }
    let require_missing =
        cands.iter().any(|c| c.require) && !admissible.iter().any(|&i| cands[i].require);
    if admissible.is_empty() || admissible.len() < params.min_sources || require_missing {
        for &i in &cand {
            if matches!(mem[i].state, SourceState::Combined) {
                mem[i].state = SourceState::WaitsSources;
            }
        }
        return Outcome::None(NoSelection::WaitsSources);
    }
    let leap = leap_vote(&admissible, &data, cands);

    // Step 3: prefer, stratum, scores.
    if admissible.iter().any(|&i| cands[i].prefer) {
        admissible.retain(|&i| {
            if cands[i].prefer {
                true
            } else {
                mem[i].state = SourceState::NotPreferred;
                false
            }
        });
    }
    let min_stratum = admissible
        .iter()
        .filter_map(|&i| data[i].map(|d| d.stratum))
        .min()
        .unwrap_or(0);
    let distance = |i: usize, bonus: bool| {
        let d = data[i].unwrap_or_else(|| unreachable!("admissible sources have data"));
        d.root_distance
            + f64::from(d.stratum.saturating_sub(min_stratum)) * params.stratum_weight
            + if bonus { params.reselect_distance } else { 0.0 }
    };
    let sel_distance = previous.and_then(|s| {
        data.get(s).copied().flatten().map(|d| {
            d.root_distance
                + f64::from(d.stratum.saturating_sub(min_stratum)) * params.stratum_weight
        })
    });
    let mut best: Option<(usize, f64)> = None;
    for (i, m) in mem.iter_mut().enumerate() {
        if !admissible.contains(&i) {
            m.score = 1.0;
            m.distant = DISTANT_PENALTY;
            continue;
        }
        let di = distance(i, true);
        match (previous, sel_distance) {
            (Some(s), Some(ds)) => {
                if updated == Some(i) || updated == Some(s) {
                    m.score = (m.score * ds / di).max(1.0);
                }
            }
            _ => m.score = 1.0 / di,
        }
        if best.is_none_or(|(_, b)| m.score > b) {
            best = Some((i, m.score));
        }
    }
    let Some((best_id, best_score)) = best else {
        return Outcome::None(NoSelection::WaitsSources);
    };
    let stay = previous.filter(|&s| admissible.contains(&s) && best_score <= SCORE_LIMIT);
    let selected = if let Some(s) = stay {
        s
    } else {
        if cands[best_id].updates == 0 {
            if let Some(s) = previous.filter(|s| admissible.contains(s)) {
                mem[s].state = SourceState::WaitsUpdate;
            }
            return Outcome::None(NoSelection::WaitsSources);
        }
        for m in mem.iter_mut() {
            m.score = 1.0;
            m.distant = 0;
        }
        best_id
    };
    mem[selected].state = SourceState::Selected;
    if cands[selected].updates == 0 {
        return Outcome::Selected {
            selected,
            update: None,
            leap,
        };
    }
    let update = combine(cands, mem, &admissible, &data, selected, params);
    Outcome::Selected {
        selected,
        update,
        leap,
    }
}

/// Counts, for the source that just gave a sample, how many of its updates in a row found
/// it bad (in its final state: a falseticker is known only after the intersection).
fn count_bad_updates(mem: &mut [Memory], updated: Option<usize>) {
    let Some(m) = updated.and_then(|u| mem.get_mut(u)) else {
        return;
    };
    if m.state.is_bad() {
        m.bad_updates += 1;
    } else {
        m.bad_updates = 0;
    }
}

/// The leap indicator more than half of the admissible sources announce (trusted ones
/// only, if any are trusted); 0 otherwise.
fn leap_vote(admissible: &[usize], data: &[Option<SelectionData>], cands: &[Candidate]) -> u8 {
    let trusted = admissible.iter().any(|&i| cands[i].trust);
    let (mut voters, mut insert, mut delete) = (0usize, 0usize, 0usize);
    for d in admissible
        .iter()
        .filter(|&&i| !trusted || cands[i].trust)
        .filter_map(|&i| data[i])
    {
        voters += 1;
        match d.leap {
            1 => insert += 1,
            2 => delete += 1,
            _ => {}
        }
    }
    if insert > voters / 2 {
        1
    } else if delete > voters / 2 {
        2
    } else {
        0
    }
}

/// The selected source's estimate combined with the admissible sources close to it:
/// offsets weighted by the inverse of their root distance, frequencies by the inverse of
/// their variance; the offset's error includes how far they disagree.
fn combine(
    cands: &[Candidate],
    mem: &mut [Memory],
    admissible: &[usize],
    data: &[Option<SelectionData>],
    selected: usize,
    params: &SelectParams,
) -> Option<Combined> {
    let s = cands[selected].tracking?;
    let sd = data[selected]?;
    let dist_s = sd.root_distance + params.reselect_distance;
    let (mut sw, mut so, mut sosd) = (0.0f64, 0.0f64, 0.0f64);
    let (mut sv, mut sf, mut sk) = (0.0f64, 0.0f64, 0.0f64);
    let mut n = 0;
    let mut parts: Vec<(f64, f64, f64)> = Vec::new();
    for &i in admissible {
        let (Some(t), Some(d)) = (cands[i].tracking, data[i]) else {
            continue;
        };
        if i != selected {
            let far = d.root_distance > params.combine_limit * dist_s
                || (s.frequency - t.frequency).abs()
                    > params.combine_limit * (s.skew + t.skew + params.max_clock_error);
            if far {
                mem[i].distant = if cands[i].reach_size >= 8 {
                    DISTANT_PENALTY
                } else {
                    1
                };
            } else if mem[i].distant > 0 {
                mem[i].distant -= 1;
            }
            if mem[i].distant > 0 {
                mem[i].state = SourceState::NotCombined;
                continue;
            }
            mem[i].state = SourceState::Combined;
        }
        let elapsed = s.ref_time - t.ref_time;
        let offset = t.offset + elapsed * t.frequency;
        let offset_sd = t.offset_sd + elapsed * t.frequency_sd;
        let w = 1.0 / d.root_distance.max(1e-12);
        parts.push((w, offset, offset_sd));
        sw += w;
        so += w * offset;
        let v = 1.0 / (t.frequency_sd * t.frequency_sd).max(1e-30);
        sv += v;
        sf += v * t.frequency;
        sk += 1.0 / (t.skew * t.skew).max(1e-30);
        n += 1;
    }
    if n <= 1 {
        return Some(Combined {
            ref_time: s.ref_time,
            offset: s.offset,
            offset_sd: s.offset_sd,
            frequency: s.frequency,
            frequency_sd: s.frequency_sd,
            skew: s.skew,
            root_delay: s.root_delay,
            root_dispersion: s.root_dispersion,
            stratum: sd.stratum,
            combined: 1,
        });
    }
    let offset = so / sw;
    for (w, o, osd) in &parts {
        sosd += w * (osd * osd + (o - s.offset) * (o - s.offset));
    }
    Some(Combined {
        ref_time: s.ref_time,
        offset,
        offset_sd: (sosd / sw).sqrt(),
        frequency: sf / sv,
        frequency_sd: 1.0 / sv.sqrt(),
        skew: 1.0 / sk.sqrt(),
        root_delay: s.root_delay,
        root_dispersion: s.root_dispersion,
        stratum: sd.stratum,
        combined: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(offset: f64, distance: f64) -> Candidate {
        Candidate {
            data: Some(SelectionData {
                offset,
                root_distance: distance,
                lo: offset - distance,
                hi: offset + distance,
                std_dev: 1e-5,
                first_sample_ago: 600.0,
                last_sample_ago: 10.0,
                stratum: 2,
                leap: 0,
            }),
            tracking: Some(TrackingData {
                ref_time: 0.0,
                offset,
                offset_sd: 1e-5,
                frequency: 0.0,
                frequency_sd: 1e-8,
                skew: 1e-7,
                root_delay: distance,
                root_dispersion: distance / 2.0,
            }),
            reach: 0xff,
            reach_size: 8,
            unreachable_run: 0,
            noselect: false,
            prefer: false,
            trust: false,
            require: false,
            updates: 1,
            ref_id: 0,
            local_ref_id: None,
        }
    }

    fn run(c: &[Candidate], prev: Option<usize>) -> (Outcome, Vec<Memory>) {
        let mut mem = vec![Memory::default(); c.len()];
        let o = select(c, &mut mem, &SelectParams::default(), prev, Some(0));
        (o, mem)
    }

    #[test]
    fn a_majority_outvotes_a_falseticker() {
        let c = [cand(0.0, 0.001), cand(0.0002, 0.001), cand(1.0, 0.001)];
        let (o, mem) = run(&c, None);
        let Outcome::Selected {
            selected, update, ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert!(selected < 2);
        assert_eq!(mem[2].state, SourceState::Falseticker);
        let u = update.unwrap();
        assert_eq!(u.combined, 2);
        assert!((u.offset - 0.0001).abs() < 1e-9, "{u:?}");
        assert!(u.offset_sd > 1e-5, "their disagreement counts");
    }

    #[test]
    fn a_falseticker_counts_as_bad_for_replacement() {
        let c = [cand(0.0, 0.001), cand(0.0002, 0.001), cand(1.0, 0.001)];
        let mut mem = vec![Memory::default(); 3];
        for _ in 0..BAD_UPDATES_LIMIT {
            select(&c, &mut mem, &SelectParams::default(), None, Some(2));
        }
        assert_eq!(mem[2].bad_updates, BAD_UPDATES_LIMIT);
        assert_eq!(mem[0].bad_updates, 0);
    }

    #[test]
    fn two_that_disagree_have_no_majority() {
        let (o, mem) = run(&[cand(0.0, 0.001), cand(1.0, 0.001)], None);
        assert_eq!(
            o,
            Outcome::None(NoSelection::NoMajority { agree: 1, of: 2 })
        );
        assert!(mem.iter().all(|m| m.state == SourceState::Falseticker));
    }

    #[test]
    fn the_selected_source_stays_until_another_is_much_better() {
        let c = [cand(0.0, 0.002), cand(0.0, 0.001)];
        let mut mem = vec![Memory::default(); 2];
        let p = SelectParams::default();
        // Source 0 is the reference; source 1 is twice as good: its score grows by two
        // with each of its updates and replaces 0 once past ten.
        let mut switched_after = None;
        for k in 1..10 {
            if let Outcome::Selected { selected: 1, .. } =
                select(&c, &mut mem, &p, Some(0), Some(1))
            {
                switched_after = Some(k);
                break;
            }
        }
        assert_eq!(switched_after, Some(4), "{mem:?}");
    }

    #[test]
    fn no_update_without_a_new_sample_of_the_selected_source() {
        let mut c = [cand(0.0, 0.001), cand(0.0, 0.001)];
        c[0].updates = 0;
        let mut mem = vec![Memory::default(); 2];
        let o = select(&c, &mut mem, &SelectParams::default(), Some(0), Some(1));
        assert!(
            matches!(
                o,
                Outcome::Selected {
                    selected: 0,
                    update: None,
                    ..
                }
            ),
            "{o:?}"
        );
    }

    #[test]
    fn leap_needs_a_majority() {
        let mut c = [cand(0.0, 0.001), cand(0.0, 0.001), cand(0.0, 0.001)];
        c[0].data.as_mut().unwrap().leap = 1;
        let (o, _) = run(&c, None);
        assert!(
            matches!(o, Outcome::Selected { leap: 0, .. }),
            "one of three: {o:?}"
        );
        c[1].data.as_mut().unwrap().leap = 1;
        let (o, _) = run(&c, None);
        assert!(
            matches!(o, Outcome::Selected { leap: 1, .. }),
            "two of three: {o:?}"
        );
    }

    #[test]
    fn minsources_and_require() {
        let c = [cand(0.0, 0.001), cand(0.0, 0.001)];
        let mut mem = vec![Memory::default(); 2];
        let p = SelectParams {
            min_sources: 3,
            ..Default::default()
        };
        assert_eq!(
            select(&c, &mut mem, &p, None, Some(0)),
            Outcome::None(NoSelection::WaitsSources)
        );
        let mut c = [cand(0.0, 0.001), cand(0.0, 0.001), cand(5.0, 0.001)];
        c[2].require = true;
        let (o, _) = run(&c, None);
        assert_eq!(o, Outcome::None(NoSelection::WaitsSources));
    }

    #[test]
    fn orphans_are_followed_only_by_servers_with_a_higher_id() {
        // `local stratum 10 orphan` on both of a pair with no upstream: each sees the other
        // at stratum 10. The one whose own address (as reference id) is higher follows;
        // the lower one keeps serving its local time.
        let params = SelectParams {
            orphan_stratum: Some(10),
            ..SelectParams::default()
        };
        let mut peer = cand(0.0, 0.001);
        peer.data.as_mut().unwrap().stratum = 10;
        peer.ref_id = 0x0A00_0001;
        peer.local_ref_id = Some(0x0A00_0002);
        let mut mem = vec![Memory::default()];
        let o = select(&[peer], &mut mem, &params, None, Some(0));
        assert!(matches!(o, Outcome::Selected { selected: 0, .. }), "{o:?}");
        peer.local_ref_id = Some(0x0A00_0000);
        let o = select(&[peer], &mut mem, &params, None, Some(0));
        assert_eq!(o, Outcome::None(NoSelection::NoSelectable));
        assert_eq!(mem[0].state, SourceState::Orphan);
        assert_eq!(mem[0].state.select_letter(), 'O');
    }

    #[test]
    fn a_real_source_is_preferred_to_an_orphan_and_followers_of_orphans_are_ignored() {
        let params = SelectParams {
            orphan_stratum: Some(10),
            ..SelectParams::default()
        };
        let mut orphan = cand(0.0, 0.001);
        orphan.data.as_mut().unwrap().stratum = 10;
        (orphan.ref_id, orphan.local_ref_id) = (1, Some(2));
        let mut follower = cand(0.0, 0.001);
        follower.data.as_mut().unwrap().stratum = 11;
        (follower.ref_id, follower.local_ref_id) = (0, Some(2));
        let real = cand(0.0005, 0.001);
        let mut mem = vec![Memory::default(); 3];
        let o = select(&[orphan, follower, real], &mut mem, &params, None, Some(2));
        assert!(matches!(o, Outcome::Selected { selected: 2, .. }), "{o:?}");
        assert_eq!(mem[0].state, SourceState::Orphan);
        assert_eq!(mem[1].state, SourceState::Orphan);
        // Without the real one, only the orphan itself may be followed, never a follower.
        let mut mem = vec![Memory::default(); 2];
        let o = select(&[orphan, follower], &mut mem, &params, None, Some(0));
        assert!(matches!(o, Outcome::Selected { selected: 0, .. }), "{o:?}");
    }
}
