//! Adam with its state exposed, so a checkpoint can hold the moment estimates and a resumed run
//! continues exactly where it stopped (candle's `AdamW` keeps them private).

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var, backprop::GradStore};

/// Adam (Kingma & Ba) without weight decay, the update of candle's `AdamW` with decay 0.
pub struct Adam {
    params: Vec<Param>,
    lr: f64,
    /// Decay rates of the first and second moment estimates.
    betas: (f64, f64),
    step: usize,
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Adam {
    /// Optimises the named variables with learning rate `lr` and the usual decay rates
    /// (0.9, 0.999).
    pub fn new(vars: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        Self::with_betas(vars, lr, (BETA1, BETA2))
    }

    /// [`Adam::new`] with other decay rates: GANs train with a shorter memory (ClusterGAN's and
    /// WGAN-GP's 0.5 and 0.9), so the moments follow an adversary that keeps moving.
    pub fn with_betas(vars: Vec<(String, Var)>, lr: f64, betas: (f64, f64)) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?.detach();
                Ok(Param {
                    name,
                    m: zeros.clone(),
                    v: zeros,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            params,
            lr,
            betas,
            step: 0,
        })
    }

    /// Back-propagates `loss` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Applies one update from gradients already computed: where one backward pass feeds two
    /// optimisers (DeepCluster's network and its classifier, which is replaced every epoch).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (beta1, beta2) = self.betas;
        let (scale_m, scale_v) = (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t)));
        for p in &mut self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            // Detached: a moment that kept its op history would hold every past step's graph.
            let g = g.detach();
            p.m = ((&p.m * beta1)? + (&g * (1.0 - beta1))?)?.detach();
            p.v = ((&p.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?.detach();
            let update = ((&p.m * scale_m)? / ((&p.v * scale_v)?.sqrt()? + EPS)?)?;
            p.var.set(&(p.var.as_tensor() - (update * self.lr)?)?)?;
        }
        Ok(())
    }

    /// Number of updates applied so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Moment estimates as `m.NAME` / `v.NAME` tensors.
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("m.{}", p.name), p.m.clone()),
                    (format!("v.{}", p.name), p.v.clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`Adam::state`] after `steps` updates.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        for p in &mut self.params {
            let get = |key: String| {
                state
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {key}")))
            };
            let (m, v) = (get(format!("m.{}", p.name))?, get(format!("v.{}", p.name))?);
            if m.shape() != p.var.shape() || v.shape() != p.var.shape() {
                candle_core::bail!("optimizer state for {} has the wrong shape", p.name);
            }
            (p.m, p.v) = (m, v);
        }
        self.step = steps;
        Ok(())
    }
}

/// What a checkpoint keeps of a run's optimisers: their moments by variable name, and the
/// updates applied.
pub trait Moments {
    /// Moment estimates as `m.NAME` / `v.NAME` tensors.
    fn moments(&self) -> HashMap<String, Tensor>;
    /// Updates applied.
    fn updates(&self) -> usize;
}

impl Moments for Adam {
    fn moments(&self) -> HashMap<String, Tensor> {
        self.state()
    }

    fn updates(&self) -> usize {
        self.steps()
    }
}

/// Two optimisers stepped in turn, once each per round (a GAN's discriminator and generator):
/// their variables are disjoint, so one map holds both states, and each restores its own from
/// it; the rounds are the updates of either.
impl Moments for (&Adam, &Adam) {
    fn moments(&self) -> HashMap<String, Tensor> {
        let mut all = self.0.state();
        all.extend(self.1.state());
        all
    }

    fn updates(&self) -> usize {
        self.0.steps().min(self.1.steps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    #[test]
    fn matches_candle_adamw_without_decay() {
        for betas in [(BETA1, BETA2), (0.5, 0.9)] {
            matches_candle_adamw_with(betas);
        }
    }

    fn matches_candle_adamw_with((beta1, beta2): (f64, f64)) {
        let init = Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let (a, b) = (
            Var::from_tensor(&init).unwrap(),
            Var::from_tensor(&init).unwrap(),
        );
        let mut ours =
            Adam::with_betas(vec![("w".into(), a.clone())], 0.01, (beta1, beta2)).unwrap();
        let params = ParamsAdamW {
            lr: 0.01,
            weight_decay: 0.0,
            beta1,
            beta2,
            ..Default::default()
        };
        let mut theirs = AdamW::new(vec![b.clone()], params).unwrap();
        for _ in 0..5 {
            ours.backward_step(&a.sqr().unwrap().sum_all().unwrap())
                .unwrap();
            theirs
                .backward_step(&b.sqr().unwrap().sum_all().unwrap())
                .unwrap();
        }
        let (x, y) = (a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        for (x, y) in x.iter().zip(&y) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }

    #[test]
    fn restored_state_continues_identically() {
        let run = |split: Option<usize>| {
            let var =
                Var::from_tensor(&Tensor::new(&[0.5f32, 4.0], &Device::Cpu).unwrap()).unwrap();
            let mut opt = Adam::new(vec![("w".into(), var.clone())], 0.1).unwrap();
            for i in 0..6 {
                if Some(i) == split {
                    let (state, steps) = (opt.state(), opt.steps());
                    opt = Adam::new(vec![("w".into(), var.clone())], 0.1).unwrap();
                    opt.restore(&state, steps).unwrap();
                }
                opt.backward_step(&var.sqr().unwrap().sum_all().unwrap())
                    .unwrap();
            }
            // Moments must not keep the autograd graph of past steps alive.
            assert!(opt.state().values().all(|t| !t.track_op()));
            var.to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(None), run(Some(3)));
    }
}
