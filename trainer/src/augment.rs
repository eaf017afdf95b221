//! Random affine jitter of image minibatches (shift and rotation), for pretraining and
//! fine-tuning.
//!
//! Why: a convolutional autoencoder trained on the plain images learns to reproduce where a
//! stroke sits as much as what it is, so k-means on its embedding splits a class by position
//! and slant. Training on jittered copies makes the embedding care less about both. DEC-DA
//! (Guo et al., 2018) uses these transforms (±10% shift, ±10° rotation) for that reason, with
//! 500 pretraining epochs. It is off by default: at the default 30 epochs it cost accuracy on
//! MNIST, since the jittered task needs more epochs to learn than the trainer's budget gives
//! it, and on Fashion-MNIST it traded NMI and ARI for ACC (docs/RESULTS.md, "augmentation").
//!
//! Pixels that come from outside the image are the normalised value of a black pixel, 0.

use candle_core::Tensor;
use dekm_shared::ImageShape;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::SampleShape;

/// How much to jitter each image. Vector data are never jittered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Largest shift along each axis, as a fraction of the image side (0.1 moves a 28-pixel
    /// image by up to 2.8 pixels).
    pub shift: f32,
    /// Largest rotation, in degrees, either way.
    pub rotate_deg: f32,
}

impl Augment {
    /// No jitter, the default (and how models trained before augmentation existed read).
    pub const OFF: Self = Self {
        shift: 0.0,
        rotate_deg: 0.0,
    };

    /// DEC-DA's jitter: up to 10% shift and 10° rotation.
    pub const DEC_DA: Self = Self {
        shift: 0.1,
        rotate_deg: 10.0,
    };

    /// True when the transform is the identity.
    pub fn is_off(&self) -> bool {
        self.shift == 0.0 && self.rotate_deg == 0.0
    }

    /// Checks the ranges: shifts in `[0, 0.5]`, rotations in `[0, 180]` degrees, both finite.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=0.5).contains(&self.shift) {
            return Err(format!(
                "augmentation shift {} must be in [0, 0.5] (a fraction of the image side)",
                self.shift
            ));
        }
        if !(0.0..=180.0).contains(&self.rotate_deg) {
            return Err(format!(
                "augmentation rotation {} must be in [0, 180] degrees",
                self.rotate_deg
            ));
        }
        Ok(())
    }

    /// Writes a jittered copy of every CHW image in `src` to `dst`, one random draw per image;
    /// all channels of an image move together.
    ///
    /// # Panics
    /// When `src` and `dst` differ in length or are not whole images: both come from the
    /// trainer's own minibatches, never from outside.
    pub fn apply(&self, shape: ImageShape, src: &[f32], dst: &mut [f32], rng: &mut impl Rng) {
        let len = shape.len();
        assert!(
            len > 0 && src.len() == dst.len() && src.len().is_multiple_of(len),
            "augment: {} values in, {} out, for images of {len}",
            src.len(),
            dst.len()
        );
        if self.is_off() {
            dst.copy_from_slice(src);
            return;
        }
        // Every draw first, in image order (the same numbers for a seed however many threads
        // warp); then the images in parallel, so the warp never holds up a GPU's next step.
        let draws: Vec<Affine> = (0..src.len() / len)
            .map(|_| self.draw(shape, rng))
            .collect();
        let plane = shape.height * shape.width;
        src.par_chunks_exact(len)
            .zip(dst.par_chunks_exact_mut(len))
            .zip(&draws)
            .for_each(|((img, out), t)| {
                for (p, q) in img.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
                    t.warp(shape, p, q);
                }
            });
    }

    fn draw(&self, shape: ImageShape, rng: &mut impl Rng) -> Affine {
        let mut sym = |m: f32| {
            if m > 0.0 {
                rng.random_range(-m..=m)
            } else {
                0.0
            }
        };
        let angle = sym(self.rotate_deg).to_radians();
        let dy = sym(self.shift) * shape.height as f32;
        let dx = sym(self.shift) * shape.width as f32;
        Affine {
            cos: angle.cos(),
            sin: angle.sin(),
            dy,
            dx,
        }
    }
}

/// [`Augment`] bound to the data's image shape, working on candle minibatches.
#[derive(Debug, Clone, Copy)]
pub struct Jitter {
    shape: ImageShape,
    augment: Augment,
}

impl Jitter {
    /// `None` when there is nothing to do: vector data, or augmentation off.
    pub fn new(shape: &SampleShape, augment: Augment) -> Option<Self> {
        match shape {
            SampleShape::Image(s) if !augment.is_off() => Some(Self { shape: *s, augment }),
            _ => None,
        }
    }

    /// The minibatch a training step sees: `xb` itself without a jitter, else a jittered copy.
    pub fn inputs(
        jitter: Option<&Self>,
        xb: Tensor,
        rng: &mut impl Rng,
    ) -> candle_core::Result<Tensor> {
        match jitter {
            Some(j) => j.batch(&xb, rng),
            None => Ok(xb),
        }
    }

    /// A jittered copy of the minibatch `xb` `[b, c·h·w]`.
    fn batch(&self, xb: &Tensor, rng: &mut impl Rng) -> candle_core::Result<Tensor> {
        let src = xb.flatten_all()?.to_vec1::<f32>()?;
        let mut dst = vec![0f32; src.len()];
        self.augment.apply(self.shape, &src, &mut dst, rng);
        Tensor::from_vec(dst, xb.shape(), xb.device())
    }
}

/// A rotation about the image centre followed by a shift, in pixels.
struct Affine {
    cos: f32,
    sin: f32,
    dy: f32,
    dx: f32,
}

impl Affine {
    /// Output pixel `p` takes the bilinear sample of the input at the inverse image of `p`.
    fn warp(&self, shape: ImageShape, src: &[f32], dst: &mut [f32]) {
        let (h, w) = (shape.height, shape.width);
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let at = |y: isize, x: isize| -> f32 {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                0.0
            } else {
                src[y as usize * w + x as usize]
            }
        };
        for (i, row) in dst.chunks_exact_mut(w).enumerate() {
            let v = i as f32 - cy - self.dy;
            for (j, out) in row.iter_mut().enumerate() {
                let u = j as f32 - cx - self.dx;
                // Inverse rotation of (v, u) about the centre.
                let sy = self.cos * v - self.sin * u + cy;
                let sx = self.sin * v + self.cos * u + cx;
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let (y0, x0) = (y0 as isize, x0 as isize);
                *out = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    const SHAPE: ImageShape = ImageShape {
        channels: 2,
        height: 5,
        width: 7,
    };

    fn ramp() -> Vec<f32> {
        (0..SHAPE.len()).map(|i| i as f32 + 1.0).collect()
    }

    #[test]
    fn off_copies_the_images() {
        let src = ramp();
        let mut dst = vec![0.0; src.len()];
        Augment::OFF.apply(SHAPE, &src, &mut dst, &mut rng(0, 0));
        assert_eq!(dst, src);
    }

    #[test]
    fn a_whole_pixel_shift_moves_every_channel_and_fills_with_black() {
        let t = Affine {
            cos: 1.0,
            sin: 0.0,
            dy: 1.0,
            dx: -2.0,
        };
        let src = ramp();
        let plane = SHAPE.height * SHAPE.width;
        for c in 0..SHAPE.channels {
            let p = &src[c * plane..(c + 1) * plane];
            let mut q = vec![f32::NAN; plane];
            t.warp(SHAPE, p, &mut q);
            for i in 0..SHAPE.height {
                for j in 0..SHAPE.width {
                    let (si, sj) = (i as isize - 1, j as isize + 2);
                    let want = if si < 0 || sj >= SHAPE.width as isize {
                        0.0
                    } else {
                        p[si as usize * SHAPE.width + sj as usize]
                    };
                    assert_eq!(q[i * SHAPE.width + j], want, "channel {c} pixel ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn a_quarter_turn_of_a_square_image_is_exact_up_to_rounding() {
        let shape = ImageShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let src: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let t = Affine {
            cos: 0.0,
            sin: 1.0,
            dy: 0.0,
            dx: 0.0,
        };
        let mut q = vec![0.0; 16];
        t.warp(shape, &src, &mut q);
        // Output (i, j) samples input (3 - j, i).
        for i in 0..4 {
            for j in 0..4 {
                let want = src[(3 - j) * 4 + i];
                assert!((q[i * 4 + j] - want).abs() < 1e-4, "({i}, {j})");
            }
        }
    }

    #[test]
    fn draws_stay_in_range_and_follow_the_seed() {
        let src = vec![1.0; SHAPE.len() * 50];
        let (mut a, mut b) = (vec![0.0; src.len()], vec![0.0; src.len()]);
        let aug = Augment::DEC_DA;
        aug.apply(SHAPE, &src, &mut a, &mut rng(3, 1));
        aug.apply(SHAPE, &src, &mut b, &mut rng(3, 1));
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
        // Some images moved (black borders came in), none vanished.
        assert!(a.iter().any(|&v| v < 0.5));
        assert!(
            a.chunks(SHAPE.len())
                .all(|img| img.iter().sum::<f32>() > 0.0)
        );
        let mut r = rng(9, 2);
        for _ in 0..100 {
            let t = aug.draw(SHAPE, &mut r);
            assert!(t.dy.abs() <= 0.5 + 1e-6 && t.dx.abs() <= 0.7 + 1e-6);
            assert!(t.sin.abs() <= 10f32.to_radians().sin() + 1e-6);
        }
    }

    #[test]
    fn ranges_are_checked() {
        assert!(Augment::DEC_DA.validate().is_ok());
        let e = Augment {
            shift: 0.6,
            ..Augment::OFF
        };
        assert!(e.validate().unwrap_err().contains("shift 0.6"));
        let e = Augment {
            rotate_deg: f32::NAN,
            ..Augment::OFF
        };
        assert!(e.validate().unwrap_err().contains("rotation NaN"));
    }
}
