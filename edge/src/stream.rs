//! Assigning a live sensor stream: one reading at a time into a ring buffer, one assignment
//! per completed window.
//!
//! A model trained on a recording carries a [`StreamSpec`] (channels, window, hop). A
//! [`StreamSession`] keeps the last `window` readings in a ring of fixed capacity `CAP` values
//! (`heapless`, chosen at compile time, so a microcontroller knows its memory up front), and
//! every `hop` readings once the ring is full it lays the window out channel-major, as the
//! trainer cut its samples, and assigns it. Taking a reading never allocates. A bad reading
//! (wrong channel count, NaN or infinity) is refused before it touches the ring, so the
//! windows around it are the ones a clean stream would have given.

use dekm_shared::{ContractError, StreamSpec, preprocess::check_finite};

use crate::{Assignment, Model, SampleError, Session};

/// Why a stream session cannot start, or why a reading or window was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StreamError {
    /// The model was trained on pre-cut samples, not on a stream.
    #[error(
        "the model was not trained on a stream (no window and hop in its metadata); train with \
         --window on a recording"
    )]
    NotAStreamModel,
    /// The window does not fit the session's compile-time capacity.
    #[error("a window of {needed} values does not fit this session's capacity of {capacity}")]
    Capacity {
        /// Values per window (channels x readings).
        needed: usize,
        /// The session's capacity.
        capacity: usize,
    },
    /// A reading with the wrong number of values or a NaN/infinite one; the ring is unchanged.
    #[error("reading {index}: {source}")]
    Reading {
        /// Index the reading would have had.
        index: u64,
        /// What is wrong with it.
        source: ContractError,
    },
    /// The completed window could not be assigned (overflow inside the network); the reading
    /// was taken and the stream goes on.
    #[error("window starting at reading {start}: {source}")]
    Window {
        /// Index of the window's first reading.
        start: u64,
        /// Why.
        source: SampleError,
    },
}

/// The assignment of one completed window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowAssignment {
    /// Index of the window's first reading in the stream (0-based, counting accepted
    /// readings only).
    pub start: u64,
    /// Cluster, distances, score and outlier flag.
    pub assignment: Assignment,
}

/// Cuts a stream of readings into the windows a stream model assigns: the last `window`
/// readings in a ring, and every `hop` readings once it is full, the window laid out
/// channel-major. It borrows no model, so a server can keep one per client stream across
/// requests; [`StreamSession`] pairs one with a model's session.
#[derive(Debug, Clone)]
pub struct Windower<const CAP: usize> {
    channels: usize,
    window: usize,
    hop: u64,
    /// The last `window` readings, reading-major; slot `next` is the oldest once full.
    ring: heapless::Vec<f32, CAP>,
    /// The window laid out channel-major for the encoder.
    sample: heapless::Vec<f32, CAP>,
    next: usize,
    /// Readings accepted since the windower began.
    taken: u64,
    /// Readings accepted since it began or was restarted.
    run: u64,
}

impl<const CAP: usize> Windower<CAP> {
    /// A windower for `spec`, whose window must fit in `CAP` values.
    pub fn new(spec: &StreamSpec) -> Result<Self, StreamError> {
        let needed = spec.window_len();
        let mut ring = heapless::Vec::new();
        let mut sample = heapless::Vec::new();
        ring.resize(needed, 0.0)
            .and_then(|()| sample.resize(needed, 0.0))
            .map_err(|_| StreamError::Capacity {
                needed,
                capacity: CAP,
            })?;
        Ok(Self {
            channels: spec.channel_count(),
            window: spec.window,
            hop: spec.hop as u64,
            ring,
            sample,
            next: 0,
            taken: 0,
            run: 0,
        })
    }

    /// Readings taken so far.
    pub fn readings(&self) -> u64 {
        self.taken
    }

    /// Forgets the buffered readings (after a gap in the stream, so no window spans it); the
    /// reading count goes on.
    pub fn restart(&mut self) {
        self.next = 0;
        self.run = 0;
    }

    /// Takes one reading (one value per channel, in the spec's order). When it completes a
    /// window (every `hop` readings once `window` have arrived), returns the index of the
    /// window's first reading and the window, channel-major.
    pub fn push(&mut self, reading: &[f32]) -> Result<Option<(u64, &[f32])>, StreamError> {
        let c = self.channels;
        let index = self.taken;
        let refuse = |source| StreamError::Reading { index, source };
        if reading.len() != c {
            return Err(refuse(ContractError::LengthMismatch {
                what: "reading (one value per channel)",
                expected: c,
                got: reading.len(),
            }));
        }
        check_finite("reading", reading).map_err(refuse)?;
        let w = self.window;
        self.ring[self.next * c..(self.next + 1) * c].copy_from_slice(reading);
        self.next = (self.next + 1) % w;
        self.taken += 1;
        self.run += 1;
        let w64 = w as u64;
        if self.run < w64 || !(self.run - w64).is_multiple_of(self.hop) {
            return Ok(None);
        }
        // Oldest first: slot `next` onwards, then the start of the ring.
        for t in 0..w {
            let slot = (self.next + t) % w;
            for (ch, &v) in self.ring[slot * c..(slot + 1) * c].iter().enumerate() {
                self.sample[ch * w + t] = v;
            }
        }
        Ok(Some((self.taken - w64, &self.sample)))
    }
}

/// Assigns a stream of readings window by window; `CAP` bounds the values of one window.
#[derive(Debug)]
pub struct StreamSession<'m, const CAP: usize> {
    session: Session<'m>,
    spec: &'m StreamSpec,
    windows: Windower<CAP>,
}

impl<'m, const CAP: usize> StreamSession<'m, CAP> {
    /// A session for `model`, which must carry a stream spec whose window fits in `CAP`.
    pub fn new(model: &'m Model) -> Result<Self, StreamError> {
        let spec = model
            .meta()
            .stream
            .as_ref()
            .ok_or(StreamError::NotAStreamModel)?;
        Ok(Self {
            session: model.session(),
            spec,
            windows: Windower::new(spec)?,
        })
    }

    /// The stream's channels, window and hop.
    pub fn spec(&self) -> &StreamSpec {
        self.spec
    }

    /// Readings taken so far.
    pub fn readings(&self) -> u64 {
        self.windows.readings()
    }

    /// Forgets the buffered readings (after a gap in the stream, so no window spans it); the
    /// reading count goes on.
    pub fn restart(&mut self) {
        self.windows.restart();
    }

    /// Takes one reading (one value per channel, in the spec's order). Returns the window's
    /// assignment when this reading completes one: every `hop` readings once `window` have
    /// arrived.
    pub fn push(&mut self, reading: &[f32]) -> Result<Option<WindowAssignment>, StreamError> {
        let Some((start, sample)) = self.windows.push(reading)? else {
            return Ok(None);
        };
        let assignment = self
            .session
            .assign(sample)
            .map_err(|source| StreamError::Window { start, source })?;
        Ok(Some(WindowAssignment { start, assignment }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelParts, fixture};
    use alloc::{vec, vec::Vec};

    /// The fixture's 6-input model read as 2 channels x 3 readings, hop 2.
    fn model(hop: usize) -> Model {
        let parts = fixture::dense(3);
        let mut meta = parts.meta().clone();
        meta.stream = Some(StreamSpec {
            channels: vec!["a".into(), "b".into()],
            window: 3,
            hop,
        });
        Model::from_parts(&ModelParts::new(meta, parts.tensors().to_vec()).unwrap()).unwrap()
    }

    fn reading(t: usize) -> [f32; 2] {
        [t as f32 * 0.1, 1.0 - t as f32 * 0.05]
    }

    /// Every window the session assigns is the one cut from the whole stream, assigned alone.
    #[test]
    fn windows_match_cutting_the_whole_stream() {
        let m = model(2);
        let mut s = StreamSession::<'_, 16>::new(&m).unwrap();
        let mut got = Vec::new();
        for t in 0..10 {
            if let Some(w) = s.push(&reading(t)).unwrap() {
                got.push(w);
            }
        }
        let starts: Vec<u64> = got.iter().map(|w| w.start).collect();
        assert_eq!(starts, [0, 2, 4, 6]);
        let mut one = m.session();
        for w in &got {
            let mut sample = [0f32; 6];
            for t in 0..3 {
                let r = reading(w.start as usize + t);
                sample[t] = r[0];
                sample[3 + t] = r[1];
            }
            assert_eq!(one.assign(&sample).unwrap(), w.assignment);
        }
    }

    #[test]
    fn a_bad_reading_is_refused_and_loses_nothing() {
        let m = model(1);
        let mut clean = StreamSession::<'_, 16>::new(&m).unwrap();
        let mut dirty = StreamSession::<'_, 16>::new(&m).unwrap();
        for t in 0..6 {
            if t == 4 {
                let err = dirty.push(&[1.0, f32::NAN]).unwrap_err();
                assert_eq!(
                    err,
                    StreamError::Reading {
                        index: 4,
                        source: ContractError::NotFinite {
                            what: "reading",
                            index: 1
                        }
                    }
                );
                let err = dirty.push(&[1.0]).unwrap_err();
                assert!(
                    err.to_string().contains("expected 2 values, got 1"),
                    "{err}"
                );
            }
            assert_eq!(clean.push(&reading(t)), dirty.push(&reading(t)));
        }
        assert_eq!(dirty.readings(), 6);
    }

    #[test]
    fn restart_waits_for_a_full_window_again() {
        let m = model(1);
        let mut s = StreamSession::<'_, 16>::new(&m).unwrap();
        for t in 0..4 {
            s.push(&reading(t)).unwrap();
        }
        s.restart();
        assert_eq!(s.push(&reading(4)).unwrap(), None);
        assert_eq!(s.push(&reading(5)).unwrap(), None);
        assert_eq!(s.push(&reading(6)).unwrap().map(|w| w.start), Some(4));
    }

    #[test]
    fn models_without_a_stream_and_small_capacities_are_refused() {
        let plain = Model::from_parts(&fixture::dense(1)).unwrap();
        assert_eq!(
            StreamSession::<'_, 16>::new(&plain).err(),
            Some(StreamError::NotAStreamModel)
        );
        let m = model(1);
        assert_eq!(
            StreamSession::<'_, 4>::new(&m).err(),
            Some(StreamError::Capacity {
                needed: 6,
                capacity: 4
            })
        );
    }
}
