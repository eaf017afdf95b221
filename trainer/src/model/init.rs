//! How a fresh model's weights are drawn: the choice of rule ([`Init`]) and the seeded pass
//! over every variable that applies it ([`redraw`], ClusterGAN's own draw uses it too).

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::rng;

/// How a fresh autoencoder's weights are drawn. The choice is not cosmetic: it changes which
/// k-means optimum the pretrained embedding leads to. The Keras draw is the default because
/// over several seeds only its means cleared the DEKM paper's figures on both image sets
/// (README, "Model"; docs/RESULTS.md has the runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// What the DEKM authors' Keras model gets: the encoder's convolutions `U(-0.05, 0.05)`
    /// (Keras' `'uniform'`), every other weight Glorot-uniform `U(±√(6 / (fan_in + fan_out)))`
    /// (Keras' default for dense and transposed-convolution layers), biases zero.
    #[default]
    Keras,
    /// PyTorch's layer defaults: weights and biases alike `U(±1/√fan_in)`.
    Torch,
}

crate::choice::choice!(Init { Keras => "keras", Torch => "torch" });

/// Overwrites every variable with a draw of `init`. Variables whose draw is constant (Keras'
/// zero biases) take no numbers from the stream.
pub(super) fn reinit(varmap: &VarMap, seed: u64, init: Init) -> Result<()> {
    redraw(varmap, seed, |name, var, vars, r| {
        let weight = name
            .strip_suffix(".bias")
            .map(|base| format!("{base}.weight"))
            .unwrap_or_else(|| name.to_string());
        // Weights are `[out, in, ..]` (linear, convolution) or `[in, out, ..]` (transposed
        // convolution); Glorot's fan sum is the same either way.
        let dims = vars
            .get(&weight)
            .map(|w| w.dims().to_vec())
            .unwrap_or_else(|| var.dims().to_vec());
        let (d0, d1) = (
            dims.first().copied().unwrap_or(1),
            dims.get(1).copied().unwrap_or(1),
        );
        let kernel: usize = dims.iter().skip(2).product();
        let bound = match init {
            Init::Torch => 1.0 / ((d1 * kernel).max(1) as f32).sqrt(),
            Init::Keras if name.ends_with(".bias") => 0.0,
            Init::Keras if name.starts_with("encoder.conv") => 0.05,
            Init::Keras => (6.0 / ((d0 + d1) * kernel).max(1) as f32).sqrt(),
        };
        if bound == 0.0 {
            vec![0.0; var.elem_count()]
        } else {
            (0..var.elem_count())
                .map(|_| r.random_range(-bound..bound))
                .collect()
        }
    })
}

/// Overwrites every variable of `varmap` with `draw(name, variable, all variables, stream)`,
/// visiting names in sorted order with one seeded stream, so the result depends only on `seed`
/// (not on the map's hashing).
pub(crate) fn redraw(
    varmap: &VarMap,
    seed: u64,
    mut draw: impl FnMut(&str, &Var, &HashMap<String, Var>, &mut ChaCha8Rng) -> Vec<f32>,
) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("var map lock poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut r = rng(seed, 7);
    for name in names {
        let var = &vars[name];
        let values = draw(name, var, &vars, &mut r);
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}
