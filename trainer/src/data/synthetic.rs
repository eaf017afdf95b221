//! Built-in synthetic sensor data: multichannel windows from `k` operating regimes, with a small
//! fraction of injected anomalies whose flags are known.
//!
//! A regime fixes each channel's frequency, amplitude and DC level; a window draws a random phase
//! (sensors are not aligned), a small amplitude jitter and Gaussian noise. An anomaly is a window
//! of some regime with one channel corrupted (a spike burst, a flat line or a tripled frequency),
//! the kinds of faults a fleet of sensors actually shows.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::rng;

/// Shape of the generated windows.
pub const CHANNELS: usize = 3;
/// Time steps per window.
pub const WINDOW: usize = 32;

/// Per-channel waveform of one regime.
#[derive(Debug, Clone, Copy)]
struct Wave {
    cycles: f32,
    amplitude: f32,
    level: f32,
}

/// The `k` regimes of a simulated plant; the same `world_seed` gives the same regimes, so a
/// model trained on one draw assigns a fresh draw from the same plant.
#[derive(Debug, Clone)]
pub struct Plant {
    regimes: Vec<[Wave; CHANNELS]>,
}

/// A fault injected into one channel of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Four readings jump by ±8 (a loose connector).
    Spikes,
    /// The channel sticks at its first reading + 4 (a frozen sensor).
    Stuck,
    /// The channel oscillates at 9 cycles per window with amplitude 3 around its mean (a
    /// resonance or a wrong sampling clock).
    Oscillation,
}

impl Fault {
    /// Every kind, in the order the generator draws them.
    pub const ALL: [Fault; 3] = [Fault::Spikes, Fault::Stuck, Fault::Oscillation];

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Spikes => "spikes",
            Fault::Stuck => "stuck",
            Fault::Oscillation => "oscillation",
        }
    }
}

/// Samples drawn from a [`Plant`].
#[derive(Debug, Clone)]
pub struct Draw {
    /// Row-major windows, `CHANNELS * WINDOW` values each (channel-major within a row).
    pub xs: Vec<f32>,
    /// Regime of each window.
    pub labels: Vec<u32>,
    /// The fault injected into each window, if any.
    pub faults: Vec<Option<Fault>>,
}

impl Draw {
    /// Whether each window had a fault injected.
    pub fn anomalies(&self) -> Vec<bool> {
        self.faults.iter().map(Option::is_some).collect()
    }
}

impl Plant {
    /// `k` regimes drawn from `world_seed`.
    pub fn new(k: usize, world_seed: u64) -> Self {
        let mut r = rng(world_seed, 0);
        // Each channel spreads the regimes' DC levels evenly over [-3, 3] in its own random order,
        // so any two regimes differ in every channel's level by at least 6 / (k - 1).
        let levels: Vec<Vec<usize>> = (0..CHANNELS)
            .map(|_| {
                let mut order: Vec<usize> = (0..k).collect();
                order.shuffle(&mut r);
                order
            })
            .collect();
        let spacing = 6.0 / (k.max(2) - 1) as f32;
        let regimes = (0..k)
            .map(|i| {
                std::array::from_fn(|c| Wave {
                    cycles: r.random_range(1.0..5.0),
                    amplitude: r.random_range(0.5..2.0),
                    level: -3.0 + spacing * levels[c][i] as f32,
                })
            })
            .collect();
        Self { regimes }
    }

    /// Number of regimes.
    pub fn k(&self) -> usize {
        self.regimes.len()
    }

    /// Draws `n` windows with about `anomaly_rate` of them corrupted.
    pub fn draw(&self, n: usize, anomaly_rate: f64, seed: u64) -> Draw {
        let mut r = rng(seed, 1);
        let noise =
            Normal::new(0.0f32, 0.1).unwrap_or_else(|_| unreachable!("constant parameters"));
        let mut out = Draw {
            xs: Vec::with_capacity(n * CHANNELS * WINDOW),
            labels: Vec::with_capacity(n),
            faults: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let label = r.random_range(0..self.k());
            let phase = r.random_range(0.0..std::f32::consts::TAU);
            let start = out.xs.len();
            for w in &self.regimes[label] {
                let amp = w.amplitude * r.random_range(0.9..1.1);
                for t in 0..WINDOW {
                    let angle = std::f32::consts::TAU * w.cycles * t as f32 / WINDOW as f32 + phase;
                    out.xs
                        .push(w.level + amp * angle.sin() + noise.sample(&mut r));
                }
            }
            let fault = r
                .random_bool(anomaly_rate.clamp(0.0, 1.0))
                .then(|| corrupt(&mut out.xs[start..], &mut r));
            out.labels.push(label as u32);
            out.faults.push(fault);
        }
        out
    }
}

/// A continuous recording from a [`Plant`]: readings in time order, with the regime of every
/// reading and where faults were injected.
#[derive(Debug, Clone)]
pub struct Record {
    /// The readings (channels `ch0`, `ch1`, ...), each labelled with its regime and flagged
    /// anomalous inside a fault.
    pub recording: dekm_data::Recording,
    /// Each fault's first reading and kind; a fault lasts [`WINDOW`] readings.
    pub faults: Vec<(usize, Fault)>,
}

impl Plant {
    /// Records `slots * WINDOW` readings as a machine runs: it stays in one regime for 4 to 16
    /// slots of [`WINDOW`] readings, then switches to another; every channel's wave runs on
    /// without a jump in phase (only the level and shape change at a switch). Each slot
    /// carries a fault in one channel with probability `anomaly_rate`, the kinds of
    /// [`Plant::draw`].
    pub fn record(&self, slots: usize, anomaly_rate: f64, seed: u64) -> Record {
        let mut r = rng(seed, 2);
        let noise =
            Normal::new(0.0f32, 0.1).unwrap_or_else(|_| unreachable!("constant parameters"));
        let n = slots * WINDOW;
        let mut values = vec![0f32; n * CHANNELS];
        let mut labels = Vec::with_capacity(n);
        let mut faults = Vec::new();
        // Each channel's running angle, so a regime switch changes the wave but not its phase.
        let mut angle = [0f32; CHANNELS];
        for a in &mut angle {
            *a = r.random_range(0.0..std::f32::consts::TAU);
        }
        let (mut regime, mut left, mut amp) = (0usize, 0usize, [1f32; CHANNELS]);
        let mut window = vec![0f32; CHANNELS * WINDOW];
        for slot in 0..slots {
            if left == 0 {
                let next = r.random_range(0..self.k().max(2) - 1);
                regime = if slot == 0 || self.k() == 1 {
                    r.random_range(0..self.k())
                } else {
                    // Any other regime.
                    (regime + 1 + next) % self.k()
                };
                left = r.random_range(4..=16);
                for (a, w) in amp.iter_mut().zip(&self.regimes[regime]) {
                    *a = w.amplitude * r.random_range(0.9..1.1);
                }
            }
            left -= 1;
            // The slot channel-major, as a window of `draw` is laid out, so faults are alike.
            for (c, w) in self.regimes[regime].iter().enumerate() {
                let step = std::f32::consts::TAU * w.cycles / WINDOW as f32;
                for t in 0..WINDOW {
                    window[c * WINDOW + t] =
                        w.level + amp[c] * angle[c].sin() + noise.sample(&mut r);
                    angle[c] = (angle[c] + step) % std::f32::consts::TAU;
                }
            }
            if r.random_bool(anomaly_rate.clamp(0.0, 1.0)) {
                faults.push((slot * WINDOW, corrupt(&mut window, &mut r)));
            }
            for t in 0..WINDOW {
                for c in 0..CHANNELS {
                    values[(slot * WINDOW + t) * CHANNELS + c] = window[c * WINDOW + t];
                }
                labels.push(regime as u32);
            }
        }
        let mut anomalies = vec![false; n];
        for &(start, _) in &faults {
            anomalies[start..start + WINDOW].fill(true);
        }
        Record {
            recording: dekm_data::Recording {
                channels: (0..CHANNELS).map(|c| format!("ch{c}")).collect(),
                values,
                timestamps: None,
                labels: Some(labels),
                label_names: Vec::new(),
                anomalies: Some(anomalies),
            },
            faults,
        }
    }
}

/// Injects a random fault into one random channel of `window` and returns its kind.
fn corrupt(window: &mut [f32], r: &mut ChaCha8Rng) -> Fault {
    let c = r.random_range(0..CHANNELS);
    let ch = &mut window[c * WINDOW..(c + 1) * WINDOW];
    let fault = Fault::ALL[r.random_range(0..Fault::ALL.len())];
    match fault {
        Fault::Spikes => {
            for _ in 0..4 {
                let t = r.random_range(0..WINDOW);
                ch[t] += if r.random_bool(0.5) { 8.0 } else { -8.0 };
            }
        }
        Fault::Stuck => {
            let stuck = ch[0] + 4.0;
            ch.iter_mut().for_each(|x| *x = stuck);
        }
        Fault::Oscillation => {
            let mean = ch.iter().sum::<f32>() / WINDOW as f32;
            for (t, x) in ch.iter_mut().enumerate() {
                *x = mean + 3.0 * (std::f32::consts::TAU * 9.0 * t as f32 / WINDOW as f32).sin();
            }
        }
    }
    fault
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_sensitive() {
        let p = Plant::new(4, 1);
        let a = p.draw(200, 0.05, 2);
        let b = Plant::new(4, 1).draw(200, 0.05, 2);
        assert_eq!(a.xs, b.xs);
        assert_eq!(a.faults, b.faults);
        assert_ne!(a.xs, p.draw(200, 0.05, 3).xs);
        assert_eq!(a.xs.len(), 200 * CHANNELS * WINDOW);
        let flagged = a.faults.iter().flatten().count();
        assert!(
            (2..=25).contains(&flagged),
            "{flagged} anomalies in 200 at 5%"
        );
        assert!(
            (0..4).all(|l| a.labels.contains(&l)),
            "every regime appears"
        );
    }

    /// A recording runs in regimes of 4 to 16 slots, switches to another regime, and marks
    /// every reading of a fault; without faults its waves never jump.
    #[test]
    fn a_recording_runs_in_regimes_and_marks_its_faults() {
        let p = Plant::new(4, 1);
        let rec = p.record(300, 0.05, 2);
        let r = &rec.recording;
        assert_eq!(r.len(), 300 * WINDOW);
        assert_eq!(r.values.len(), 300 * WINDOW * CHANNELS);
        let labels = r.labels.as_ref().unwrap();
        let mut run = 1;
        for t in 1..labels.len() {
            if labels[t] == labels[t - 1] {
                run += 1;
            } else {
                assert!((4 * WINDOW..=16 * WINDOW).contains(&run), "run of {run}");
                run = 1;
            }
        }
        assert!((0..4).all(|l| labels.contains(&l)), "every regime appears");
        let marked = r.anomalies.as_ref().unwrap().iter().filter(|&&a| a).count();
        assert_eq!(marked, rec.faults.len() * WINDOW);
        assert!((3..=40).contains(&rec.faults.len()), "{}", rec.faults.len());
        assert_eq!(
            p.record(300, 0.05, 2).recording.values,
            r.values,
            "deterministic"
        );
        // Clean: consecutive readings of a channel differ by the wave's step and the noise
        // only (steps of at most 2 pi * 5 / 32 radians on amplitudes up to 2.2), plus the
        // level change at a regime switch.
        let clean = p.record(100, 0.0, 3).recording;
        let labels = clean.labels.as_ref().unwrap();
        for t in 1..clean.len() {
            if labels[t] != labels[t - 1] {
                continue;
            }
            for c in 0..CHANNELS {
                let jump =
                    (clean.values[t * CHANNELS + c] - clean.values[(t - 1) * CHANNELS + c]).abs();
                assert!(jump < 2.5, "reading {t} channel {c} jumps {jump}");
            }
        }
    }
}
