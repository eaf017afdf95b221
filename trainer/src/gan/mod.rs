//! ClusterGAN's generator and its prior (Mukherjee et al., 2019), and the generator file a
//! trained model keeps beside its export so `dekm sample` can draw new samples of a cluster.
//!
//! The latent code is `z = (z_n, z_c)`: `z_n` Gaussian noise of standard deviation
//! [`NOISE_SD`] (the paper's 0.1, small so the code dominates) and `z_c` a one-hot vector of
//! one of `k` clusters. The generator and the discriminator are built from the encoder's spec,
//! as the paper's are mirrors of each other: the discriminator is the encoder's stack with
//! leaky ReLU and one logit out, the generator the stack read backwards (transposed
//! convolutions or dense layers) with batch normalisation and ReLU, a sigmoid on images so
//! they stay in the pixels' `[0, 1]`. Without the normalisation the small noise hardly moves
//! the generator's output and every code collapses to one blank image (measured: all codes'
//! samples black after one epoch on 10,000 MNIST images).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, Linear, VarBuilder, VarMap};
use dekm_shared::{Activation, ConvGeometry, EncoderSpec, ImageShape, LEAKY_SLOPE, Stack};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::conv::{
    FastConv2d, FastConvTranspose2d, GemmConv2d, GemmConvTranspose2d, to_channels_first,
    to_channels_last,
};
use crate::model::{ConvBackend, activate, candle_deconv, redraw};

/// Standard deviation of the noise part of the code (the paper's `sigma = 0.1`).
pub const NOISE_SD: f64 = 0.1;

/// Variables of the generator are named `generator.*`.
pub const PREFIX: &str = "generator";

/// The generator file's weights and description, beside `model.safetensors`.
pub const WEIGHTS_FILE: &str = "generator.safetensors";
/// The description ([`GeneratorInfo`]) of the generator's weights.
pub const INFO_FILE: &str = "generator.json";

/// The prior of ClusterGAN's latent code.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    /// Length of the noise part `z_n`.
    pub noise: usize,
    /// Clusters: length of the one-hot part `z_c`.
    pub k: usize,
    /// Standard deviation of the noise.
    pub noise_sd: f64,
}

impl Prior {
    /// Length of a code.
    pub fn len(&self) -> usize {
        self.noise + self.k
    }

    /// True when a code has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Codes for the clusters `codes` (each `< k`), `[codes.len(), noise + k]`: fresh noise,
    /// then the one-hot cluster.
    pub fn draw(&self, codes: &[u32], r: &mut impl Rng, dev: &Device) -> Result<Tensor> {
        let mut z = Vec::with_capacity(codes.len() * self.len());
        for &c in codes {
            z.extend((0..self.noise).map(|_| {
                let v: f64 = StandardNormal.sample(r);
                (v * self.noise_sd) as f32
            }));
            z.extend((0..self.k).map(|j| if j == c as usize { 1.0 } else { 0.0 }));
        }
        Tensor::from_vec(z, (codes.len(), self.len()), dev)
    }
}

/// One layer of the generator or the discriminator: a (transposed) convolution on the fast
/// kernels (channels-last activations), the GPU's or candle's (channels-first), or a dense
/// layer. None has an activation fused in: batch normalisation or the leaky ReLU follows.
#[derive(Debug, Clone)]
enum Layer {
    FastConv(FastConv2d),
    Conv(Conv2d),
    FastDeconv(FastConvTranspose2d),
    Deconv(ConvTranspose2d),
    GemmConv(GemmConv2d),
    GemmDeconv(GemmConvTranspose2d),
    Dense(Linear),
}

impl Module for Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::FastConv(c) => c.forward(x),
            Self::Conv(c) => c.forward(x),
            Self::FastDeconv(c) => c.forward(x),
            Self::Deconv(c) => c.forward(x),
            Self::GemmConv(c) => c.forward(x),
            Self::GemmDeconv(c) => c.forward(x),
            Self::Dense(d) => d.forward(x),
        }
    }
}

fn dense(vb: &VarBuilder, name: &str, input: usize, output: usize) -> Result<Layer> {
    Ok(Layer::Dense(candle_nn::linear(input, output, vb.pp(name))?))
}

/// A convolution of `g` (`up`: its transpose, from `g.output` back to `g.input`).
fn conv(g: &ConvGeometry, up: bool, vb: VarBuilder, backend: ConvBackend) -> Result<Layer> {
    Ok(match (backend, up) {
        (ConvBackend::Fast, false) => Layer::FastConv(FastConv2d::new(*g, false, false, vb)?),
        (ConvBackend::Fast, true) => {
            Layer::FastDeconv(FastConvTranspose2d::new(*g, false, false, vb)?)
        }
        (ConvBackend::Candle, false) => {
            let cfg = Conv2dConfig {
                padding: g.pad.width,
                stride: g.stride,
                ..Default::default()
            };
            let (cin, cout) = (g.input.channels, g.output.channels);
            Layer::Conv(candle_nn::conv2d(cin, cout, g.kernel.width, cfg, vb)?)
        }
        (ConvBackend::Candle, true) => Layer::Deconv(candle_deconv(g, vb)?),
        (ConvBackend::Gemm, false) => Layer::GemmConv(GemmConv2d::new(*g, false, vb)?),
        (ConvBackend::Gemm, true) => Layer::GemmDeconv(GemmConvTranspose2d::new(*g, false, vb)?),
    })
}

/// The image a convolutional encoder spec reads, `None` for a dense one; a 1-D convolutional
/// spec is an error (ClusterGAN takes images or vectors).
fn image_input(spec: &EncoderSpec) -> Result<Option<ImageShape>> {
    match spec {
        EncoderSpec::Conv { input, .. } => Ok(Some(*input)),
        EncoderSpec::Dense { .. } => Ok(None),
        EncoderSpec::Conv1d { .. } => candle_core::bail!(
            "ClusterGAN takes images or vectors, not 1-D convolutions over series: cluster series \
             with --series-encoder dense"
        ),
    }
}

/// Batch normalisation with the minibatch's statistics (per channel: the last axis of
/// channels-last activations, axis 1 of channels-first ones and of flat vectors), then a scale
/// and shift learned per channel. Always the batch's statistics, at sampling too (see
/// [`Generator::sample`]).
#[derive(Debug, Clone)]
struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
}

const BN_EPS: f64 = 1e-5;

impl BatchNorm {
    fn new(vb: &VarBuilder, name: &str, channels: usize) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self {
            gamma: vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?,
            beta: vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor, axis: usize) -> Result<Tensor> {
        let rank = x.rank();
        if axis + 1 == rank {
            // Channels last (or flat vectors): the statistics are column means of an `[N, C]`
            // matrix, taken as products with a row of `1/N` (a strided reduction over N is
            // many times slower on the CPU).
            let shape = x.shape().clone();
            let c = x.dim(axis)?;
            let flat = x.reshape(((), c))?;
            let n = flat.dim(0)?;
            let avg = Tensor::full(1.0 / n as f32, (1, n), x.device())?;
            let mean = avg.matmul(&flat)?;
            let centred = flat.broadcast_sub(&mean)?;
            let var = avg.matmul(&centred.sqr()?)?;
            let scale = (var + BN_EPS)?
                .sqrt()?
                .recip()?
                .broadcast_mul(&self.gamma.unsqueeze(0)?)?;
            return centred
                .broadcast_mul(&scale)?
                .broadcast_add(&self.beta.unsqueeze(0)?)?
                .reshape(shape);
        }
        let mut mean = x.clone();
        for d in (0..rank).filter(|&d| d != axis) {
            mean = mean.mean_keepdim(d)?;
        }
        let centred = x.broadcast_sub(&mean)?;
        let mut var = centred.sqr()?;
        for d in (0..rank).filter(|&d| d != axis) {
            var = var.mean_keepdim(d)?;
        }
        let mut shape = vec![1; rank];
        shape[axis] = self.gamma.dim(0)?;
        let y = centred.broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        y.broadcast_mul(&self.gamma.reshape(shape.clone())?)?
            .broadcast_add(&self.beta.reshape(shape)?)
    }
}

/// The generator: the encoder spec read backwards, as the paper's generator is its
/// discriminator's mirror. A dense layer from the code to the encoder's last feature map, then
/// the transposed convolutions (or dense layers) back to a sample; batch normalisation and ReLU
/// after every layer but the output, which a sigmoid keeps in `[0, 1]` for images.
#[derive(Debug, Clone)]
pub struct Generator {
    /// Code to the last feature map (flat), or to the last hidden layer of a convolutional
    /// spec that has them.
    top: Layer,
    top_norm: BatchNorm,
    /// The hidden layers after a spec's convolutions, read backwards: dense layers from the
    /// top's output to the flattened feature map, each with its normalisation (per feature;
    /// the last one's per channel of the feature map, as the paper's generator normalises it).
    dense: Vec<(Layer, Option<BatchNorm>)>,
    /// Shape of the last feature map (images).
    unflatten: Option<ImageShape>,
    /// Back to the sample, each but the last followed by its normalisation.
    layers: Vec<(Layer, Option<BatchNorm>)>,
    channels_last: bool,
    /// A sigmoid on the output (images, whose pixels are normalised to `[0, 1]`).
    squash: bool,
}

impl Generator {
    /// Builds the generator's layers under `generator.*` names. `spec`'s latent dimension is
    /// the code's length.
    pub fn new(
        spec: &EncoderSpec,
        vb: &VarBuilder,
        backend: ConvBackend,
        squash: bool,
    ) -> Result<Self> {
        let vb = vb.pp(PREFIX);
        let pre = spec.pre_latent_len().map_err(candle_core::Error::wrap)?;
        let top = dense(&vb, "top", spec.latent_dim(), pre)?;
        let top_norm = BatchNorm::new(&vb, "top_bn", pre)?;
        let geometry = spec.conv_geometry().map_err(candle_core::Error::wrap)?;
        let hidden = spec.conv_hidden();
        let flat = spec.conv_out_len().map_err(candle_core::Error::wrap)?;
        let mirror: Vec<(Layer, Option<BatchNorm>)> = (0..hidden.len())
            .rev()
            .map(|i| {
                let (out, norm) = match i {
                    0 => (flat, geometry.last().map(|g| g.output.channels)),
                    _ => (hidden[i - 1], Some(hidden[i - 1])),
                };
                let norm = norm
                    .map(|n| BatchNorm::new(&vb, &format!("dense_bn{i}"), n))
                    .transpose()?;
                Ok((dense(&vb, &format!("dense{i}"), hidden[i], out)?, norm))
            })
            .collect::<Result<_>>()?;
        let mut layers = Vec::new();
        let unflatten = match (image_input(spec)?, spec.stack()) {
            (Some(_), _) => {
                for (i, g) in geometry.iter().enumerate().rev() {
                    let norm = (i > 0)
                        .then(|| BatchNorm::new(&vb, &format!("bn{i}"), g.input.channels))
                        .transpose()?;
                    layers.push((conv(g, true, vb.pp(format!("deconv{i}")), backend)?, norm));
                }
                geometry.last().map(|g| g.output)
            }
            (None, Stack::Dense { input, hidden }) => {
                for i in (0..hidden.len()).rev() {
                    let out = if i == 0 { input } else { hidden[i - 1] };
                    let norm = (i > 0)
                        .then(|| BatchNorm::new(&vb, &format!("bn{i}"), out))
                        .transpose()?;
                    layers.push((dense(&vb, &format!("dense{i}"), hidden[i], out)?, norm));
                }
                None
            }
            (None, Stack::Conv(_)) => unreachable!("image_input refused 1-D convolutions"),
        };
        Ok(Self {
            top,
            top_norm,
            dense: mirror,
            unflatten,
            layers,
            channels_last: backend == ConvBackend::Fast,
            squash,
        })
    }

    /// Reads the generator kept beside the model in `dir`.
    pub fn load(dir: &Path, dev: &Device) -> std::result::Result<(Self, GeneratorInfo), GanError> {
        let info_path = dir.join(INFO_FILE);
        let text = std::fs::read_to_string(&info_path).map_err(|e| GanError::Read {
            path: info_path.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "no generator here: only models trained with --method clustergan have one".into()
            } else {
                e.to_string()
            },
        })?;
        let info: GeneratorInfo = serde_json::from_str(&text).map_err(|e| GanError::Read {
            path: info_path.clone(),
            reason: e.to_string(),
        })?;
        info.check().map_err(|reason| GanError::Read {
            path: info_path,
            reason,
        })?;
        let path = dir.join(WEIGHTS_FILE);
        let read = |e: candle_core::Error| GanError::Read {
            path: path.clone(),
            reason: e.to_string(),
        };
        let tensors = candle_core::safetensors::load(&path, dev).map_err(read)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        let backend = ConvBackend::Fast.on(dev);
        let g = Self::new(&info.spec, &vb, backend, info.squash).map_err(read)?;
        Ok((g, info))
    }

    /// Samples for `codes` under the `prior`, `[codes.len(), input_len]`. Batch normalisation
    /// takes the statistics of the batch it normalises, so the codes asked for (perhaps all of
    /// one cluster) go with [`NORM_BATCH`] codes drawn from the prior, whose statistics those
    /// of training approximate; only the asked ones are returned.
    pub fn sample(
        &self,
        prior: &Prior,
        codes: &[u32],
        r: &mut impl Rng,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut all = codes.to_vec();
        all.extend((0..NORM_BATCH).map(|_| r.random_range(0..prior.k as u32)));
        let z = prior.draw(&all, r, dev)?;
        self.forward(&z)?.narrow(0, 0, codes.len())
    }
}

/// Codes from the prior that go with the asked ones when sampling ([`Generator::sample`]).
pub const NORM_BATCH: usize = 256;

impl Module for Generator {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let b = z.dim(0)?;
        let mut h = self.top_norm.forward(&self.top.forward(z)?, 1)?.relu()?;
        let last = self.dense.len();
        for (j, (layer, norm)) in self.dense.iter().enumerate() {
            h = layer.forward(&h)?;
            if let Some(n) = norm.as_ref().filter(|_| j + 1 < last) {
                h = n.forward(&h, 1)?.relu()?;
            }
        }
        // The channel axis of the feature maps.
        let mut axis = 1;
        if let Some(s) = self.unflatten {
            // The flat map is channels-last on every backend, so one generator's weights
            // mean the same on the CPU's kernels and the channels-first ones (a GPU's).
            h = h.reshape((b, s.height, s.width, s.channels))?;
            if self.channels_last {
                axis = 3;
            } else {
                h = to_channels_first(&h)?;
            }
            if let Some((_, Some(n))) = self.dense.last() {
                h = n.forward(&h, axis)?.relu()?;
            }
        }
        for (layer, norm) in &self.layers {
            h = layer.forward(&h)?;
            if let Some(n) = norm {
                h = n.forward(&h, axis)?.relu()?;
            }
        }
        if self.unflatten.is_some() && self.channels_last {
            h = to_channels_first(&h)?;
        }
        let x = h.flatten_from(1)?;
        if self.squash {
            candle_nn::ops::sigmoid(&x)
        } else {
            Ok(x)
        }
    }
}

/// ClusterGAN's adversarial loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum GanLoss {
    /// The standard non-saturating GAN loss, one discriminator step per generator step, with
    /// the noise term weighted per unit of the noise's variance and a mode-seeking term: what
    /// clusters best in a CPU's budget of a few thousand generator steps (docs/RESULTS.md,
    /// "ClusterGAN" and "ClusterGAN with the paper's WGAN-GP").
    #[default]
    NonSaturating,
    /// The paper's: WGAN-GP (Gulrajani et al., 2017), a critic trained five steps per
    /// generator step with the penalty `10 · (|∇D(x̂)| − 1)²` at random points between real and
    /// generated samples, the generator's `−D(G(z))`, the noise term weighted 10 and no
    /// mode-seeking term. An epoch makes a fifth of the generator steps (its critic steps,
    /// each a forward pass and the input gradient's, cost less than the generator's): the
    /// setting for a GPU and the paper's schedule.
    WganGp,
}

crate::choice::choice!(GanLoss { NonSaturating => "non-saturating", WganGp => "wgan-gp" });

/// The discriminator's leaky ReLU (the paper's slope, 0.2).
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    activate(x, Activation::LeakyRelu)
}

/// The discriminator: the encoder spec's layers with leaky ReLU, then one logit (real or
/// generated).
#[derive(Debug, Clone)]
pub struct Discriminator {
    input: Option<ImageShape>,
    /// The convolutions (none for a dense stack).
    convs: Vec<Layer>,
    /// The convolutions' geometries, one per layer: what their adjoints need to restore each
    /// input's size.
    geometry: Vec<ConvGeometry>,
    /// Dense layers: a dense stack's, or those after the convolutions' flattened output.
    dense: Vec<Layer>,
    out: Linear,
    channels_last: bool,
}

impl Discriminator {
    /// Builds the discriminator under `discriminator.*` names.
    pub fn new(spec: &EncoderSpec, vb: &VarBuilder, backend: ConvBackend) -> Result<Self> {
        let vb = vb.pp("discriminator");
        let pre = spec.pre_latent_len().map_err(candle_core::Error::wrap)?;
        let input = image_input(spec)?;
        let dense_stack = |first: usize, hidden: &[usize]| {
            std::iter::once(first)
                .chain(hidden.iter().copied())
                .zip(hidden)
                .enumerate()
                .map(|(i, (a, &b))| dense(&vb, &format!("dense{i}"), a, b))
                .collect::<Result<Vec<_>>>()
        };
        let (convs, geometry, dense) = match (input, spec.stack()) {
            (Some(_), _) => {
                let geometry = spec.conv_geometry().map_err(candle_core::Error::wrap)?;
                let convs = geometry
                    .iter()
                    .enumerate()
                    .map(|(i, g)| conv(g, false, vb.pp(format!("conv{i}")), backend))
                    .collect::<Result<_>>()?;
                let flat = spec.conv_out_len().map_err(candle_core::Error::wrap)?;
                (convs, geometry, dense_stack(flat, spec.conv_hidden())?)
            }
            (None, Stack::Dense { input, hidden }) => {
                (Vec::new(), Vec::new(), dense_stack(input, hidden)?)
            }
            (None, Stack::Conv(_)) => unreachable!("image_input refused 1-D convolutions"),
        };
        Ok(Self {
            input,
            convs,
            geometry,
            dense,
            out: candle_nn::linear(pre, 1, vb.pp("out"))?,
            channels_last: backend == ConvBackend::Fast,
        })
    }

    /// Flat samples `[b, input_len]` in the first layer's layout.
    fn arrange(&self, xs: &Tensor) -> Result<Tensor> {
        let b = xs.dim(0)?;
        match self.input {
            Some(s) if self.channels_last => {
                to_channels_last(&xs.reshape((b, s.channels, s.height, s.width))?)
            }
            Some(s) => xs.reshape((b, s.channels, s.height, s.width)),
            None => Ok(xs.clone()),
        }
    }

    /// Each sample's gradient of its logit with respect to the sample, `[b, input_len]` for
    /// flat samples `xs` `[b, input_len]`, in the samples' order.
    ///
    /// The gradient is the backward pass written out as ops on the weights (the output row,
    /// then each layer's leaky-ReLU slopes and its adjoint), so a loss on it (WGAN-GP's
    /// penalty, [`Self::gradient_penalty`]) back-propagates to the weights with first
    /// derivatives only, which is all candle computes. The slopes enter as constants: they are
    /// piecewise constant in the weights, so their derivative is zero wherever it exists, as
    /// in PyTorch's double backward through a leaky ReLU.
    pub fn input_gradient(&self, xs: &Tensor) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let slope = |a: &Tensor| {
            let positive = a.detach().ge(0f64)?.to_dtype(a.dtype())?;
            let s = f64::from(LEAKY_SLOPE);
            positive.affine(1.0 - s, s)
        };
        let mut h = self.arrange(xs)?;
        let mut conv_slopes = Vec::with_capacity(self.convs.len());
        for l in &self.convs {
            let a = l.forward(&h)?;
            conv_slopes.push(slope(&a)?);
            h = leaky_relu(&a)?;
        }
        let map = h.dims().to_vec();
        let mut f = self.flatten(&h)?;
        let mut dense_slopes = Vec::with_capacity(self.dense.len());
        for l in &self.dense {
            let a = l.forward(&f)?;
            dense_slopes.push(slope(&a)?);
            f = leaky_relu(&a)?;
        }
        let row = self.out.weight();
        let mut grad = row.broadcast_as((b, row.dim(1)?))?;
        for (l, s) in self.dense.iter().zip(&dense_slopes).rev() {
            let Layer::Dense(d) = l else {
                candle_core::bail!("the discriminator's dense part holds only dense layers");
            };
            grad = (grad * s)?.matmul(d.weight())?;
        }
        let mut grad = self.unflatten(&grad, &map)?;
        for (i, (l, s)) in self.convs.iter().zip(&conv_slopes).enumerate().rev() {
            grad = self.adjoint(i, l, &(grad * s)?)?;
        }
        if self.input.is_some() && self.channels_last {
            grad = to_channels_first(&grad)?;
        }
        grad.flatten_from(1)
    }

    /// The convolutions' output `h` as flat features, channels-last on every backend (so the
    /// weights after it mean the same on the CPU's kernels and candle's).
    fn flatten(&self, h: &Tensor) -> Result<Tensor> {
        if self.input.is_some() && !self.channels_last {
            to_channels_last(h)?.flatten_from(1)
        } else {
            h.flatten_from(1)
        }
    }

    /// [`Self::flatten`] undone: flat `[b, n]` back to the convolutions' output of shape `map`.
    fn unflatten(&self, flat: &Tensor, map: &[usize]) -> Result<Tensor> {
        match map {
            [b, c, h, w] if self.input.is_some() && !self.channels_last => {
                to_channels_first(&flat.reshape((*b, *h, *w, *c))?)
            }
            _ => flat.reshape(map),
        }
    }

    /// WGAN-GP's penalty at the samples `xs`: the mean of `(|∇D(x)| − 1)²`, the squared
    /// distance of the critic's slope from one, differentiable in the weights.
    pub fn gradient_penalty(&self, xs: &Tensor) -> Result<Tensor> {
        let grad = self.input_gradient(xs)?;
        // The small constant keeps the square root's derivative finite at a zero gradient.
        let norm = (grad.sqr()?.sum(1)? + 1e-12)?.sqrt()?;
        (norm - 1.0)?.sqr()?.mean_all()
    }

    /// Layer `i`'s linear map read backwards on `grad` (the gradient at its output).
    fn adjoint(&self, i: usize, layer: &Layer, grad: &Tensor) -> Result<Tensor> {
        match layer {
            Layer::FastConv(c) => c.adjoint(grad),
            Layer::GemmConv(c) => c.adjoint(grad),
            Layer::Conv(c) => {
                let g = &self.geometry[i];
                let (oph, opw) = g.transpose_output_padding();
                if oph != opw || g.pad.height != g.pad.width {
                    candle_core::bail!(
                        "candle's transposed convolution needs the same padding in both axes"
                    );
                }
                grad.conv_transpose2d(c.weight(), g.pad.width, oph, g.stride, 1)
            }
            Layer::Dense(d) => grad.matmul(d.weight()),
            Layer::FastDeconv(_) | Layer::Deconv(_) | Layer::GemmDeconv(_) => {
                candle_core::bail!("the discriminator has no transposed convolutions")
            }
        }
    }
}

impl Module for Discriminator {
    /// Logits `[b, 1]` of flat samples `[b, input_len]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = self.arrange(xs)?;
        for l in &self.convs {
            h = leaky_relu(&l.forward(&h)?)?;
        }
        let mut f = self.flatten(&h)?;
        for l in &self.dense {
            f = leaky_relu(&l.forward(&f)?)?;
        }
        self.out.forward(&f)
    }
}

/// Draws the weights of ClusterGAN's networks as its paper does: every weight from
/// `N(0, 0.02)`, biases zero, batch normalisation's scale one and shift zero; names in sorted
/// order, so the draw depends only on `seed`.
pub fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    redraw(varmap, seed, |name, var, _, r| {
        let n = var.elem_count();
        if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.contains("bn") {
            vec![1.0; n]
        } else {
            (0..n)
                .map(|_| {
                    let v: f64 = StandardNormal.sample(r);
                    (v * 0.02) as f32
                })
                .collect()
        }
    })
}

/// What `generator.json` says about the generator's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorInfo {
    /// The encoder spec the generator mirrors; its latent dimension is the code's length.
    pub spec: EncoderSpec,
    /// The prior the generator was trained on.
    pub prior: Prior,
    /// A sigmoid on the output.
    pub squash: bool,
    /// For each of the model's clusters (the export's numbering), the one-hot code whose
    /// samples the encoder assigns to it most often.
    pub codes: Vec<u32>,
    /// For each cluster, the fraction of its code's samples the model assigns to it.
    pub agreement: Vec<f32>,
    /// The normaliser's offset and scale, to map generated values back to the data's units
    /// (`raw = x / scale + offset`).
    pub offset: Vec<f32>,
    /// See `offset`.
    pub scale: Vec<f32>,
}

impl GeneratorInfo {
    /// Checks that the parts fit together.
    fn check(&self) -> std::result::Result<(), String> {
        self.spec.validate().map_err(|e| e.to_string())?;
        if self.spec.latent_dim() != self.prior.len() {
            return Err(format!(
                "the generator reads codes of {} values, the prior draws {}",
                self.spec.latent_dim(),
                self.prior.len()
            ));
        }
        if self.codes.len() != self.prior.k || self.agreement.len() != self.prior.k {
            return Err(format!(
                "{} clusters but {} codes",
                self.prior.k,
                self.codes.len()
            ));
        }
        if let Some(c) = self.codes.iter().find(|&&c| c as usize >= self.prior.k) {
            return Err(format!("code {c} of {} clusters", self.prior.k));
        }
        let n = self.spec.input_len();
        if self.offset.len() != n || self.scale.len() != n {
            return Err(format!(
                "the normaliser has {} values for {n} inputs",
                self.offset.len()
            ));
        }
        if self.scale.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err("a normaliser scale is zero or not finite".into());
        }
        Ok(())
    }

    /// Generated values (normalised, as the generator outputs them) in the data's units.
    pub fn to_raw(&self, x: &[f32]) -> Vec<f32> {
        let n = self.offset.len();
        x.iter()
            .enumerate()
            .map(|(i, v)| v / self.scale[i % n] + self.offset[i % n])
            .collect()
    }

    /// Writes `generator.json` and the generator's weights (the `generator.*` variables of
    /// `varmap`) into `dir`.
    pub fn save(&self, varmap: &VarMap, dir: &Path) -> std::result::Result<(), GanError> {
        let write = |path: PathBuf, reason: String| GanError::Write { path, reason };
        let tensors: std::collections::HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|_| write(dir.to_path_buf(), "variable map lock poisoned".into()))?
            .iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &path).map_err(|e| write(path, e.to_string()))?;
        let path = dir.join(INFO_FILE);
        let json =
            serde_json::to_string_pretty(self).map_err(|e| write(path.clone(), e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| write(path, e.to_string()))
    }
}

/// A generator that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GanError {
    /// Reading the generator failed.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the generator failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
