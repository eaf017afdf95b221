//! The autoencoders, defined once from an [`EncoderSpec`] and built either fresh (a `VarMap`
//! being trained) or from the tensors of an export, through candle's `VarBuilder`.
//!
//! Samples travel as flat `[batch, input_len]` tensors; the convolutional encoder reshapes them
//! to `[batch, c, h, w]` itself, so data loading never depends on the architecture.
//!
//! `init` draws a fresh model's weights; `embed` computes the latent vectors of a data set.

use candle_core::{DType, Module, Result, Tensor, bail};
use candle_nn::{
    Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Linear, VarBuilder, VarMap,
};
use serde::{Deserialize, Serialize};

use crate::conv::{
    CandleConv1d, CandleDeconv1d, FastConv2d, FastConvTranspose2d, GemmConv2d, GemmConvTranspose2d,
    to_channels_first, to_channels_last,
};
use dekm_shared::{
    Activation, ConvGeometry, EncoderSpec, ImageShape, LEAKY_SLOPE, POOL_EPS, Stack, TimePooling,
    names,
};

fn linear(vb: &VarBuilder, name: &str, input: usize, output: usize) -> Result<Linear> {
    candle_nn::linear(input, output, vb.pp(name))
}

/// The activation `a` on `x`; leaky ReLU as `(1 − s) relu(x) + s x` (slope `s`), whose
/// gradient candle knows everywhere.
pub(crate) fn activate(x: &Tensor, a: Activation) -> Result<Tensor> {
    match a {
        Activation::Relu => x.relu(),
        Activation::LeakyRelu => {
            let s = f64::from(LEAKY_SLOPE);
            (x.relu()? * (1.0 - s))? + (x * s)?
        }
    }
}

/// Which convolution kernels the convolutional layers run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ConvBackend {
    /// im2col / col2im + GEMM ([`crate::conv`]), forward and backward.
    #[default]
    Fast,
    /// candle's built-in `conv2d` / `conv_transpose2d` (for comparison).
    Candle,
    /// candle's `conv2d` for every convolution, transposed ones and backward passes included
    /// ([`crate::conv::GemmConv2d`]): cuBLAS on a GPU, where it stands in for `fast`.
    Gemm,
}

crate::choice::choice!(ConvBackend { Fast => "fast", Candle => "candle", Gemm => "gemm" });

impl ConvBackend {
    /// The backend as it runs on `dev`: the fused kernels are CPU code, so a GPU runs `gemm`
    /// for `fast`; the others run where they are asked for.
    pub fn on(self, dev: &candle_core::Device) -> Self {
        match self {
            Self::Fast if !dev.is_cpu() => Self::Gemm,
            other => other,
        }
    }
}

mod embed;
mod init;

pub use embed::{embed, manifold_features};
pub use init::Init;
pub(crate) use init::redraw;
use init::reinit;

/// The encoder for images. DEKM's convolutions are the default for every method (the edge
/// runtime's fastest path and the figures of docs/RESULTS.md); ClusterGAN's own networks are
/// there for comparing with that paper as it was run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ImageEncoder {
    /// DCEC/DEKM's 5x5/32, 5x5/64 and 3x3/128 convolutions with ReLU
    /// ([`EncoderSpec::paper_conv`]), 6.7 million multiply-adds an MNIST image.
    #[default]
    Dekm,
    /// ClusterGAN's (Mukherjee et al., 2019): 4x4/64 and 4x4/128 convolutions, a dense layer
    /// of 1,024, leaky ReLU ([`EncoderSpec::clustergan_conv`]), about four times DEKM's
    /// multiply-adds; its discriminator and generator mirror it as the paper's do.
    #[serde(rename = "clustergan")]
    #[cfg_attr(feature = "clap", value(name = "clustergan"))]
    ClusterGan,
}

crate::choice::choice!(ImageEncoder { Dekm => "dekm", ClusterGan => "clustergan" });

/// The encoder for multichannel series (windows of a recording, `.ts` cases). Images always get
/// the 2-D convolutions and plain vectors the dense stack; a series can take either view. Dense
/// is the default by measurement (docs/RESULTS.md, "A temporal encoder"): it leads on
/// JapaneseVowels and the demo's anomalies, the convolutions lead on BasicMotions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SeriesEncoder {
    /// The dense stack on the flattened window: every reading of every channel one input.
    #[default]
    Dense,
    /// Convolutions over time ([`EncoderSpec::paper_conv1d`]), summarised over the window as
    /// the configured [`dekm_shared::TimePooling`] says; the series is standardised per channel.
    Conv1d,
}

crate::choice::choice!(SeriesEncoder { Dense => "dense", Conv1d => "conv1d" });

/// One convolution of the encoder and the activation after it, on the selected backend.
#[derive(Debug, Clone)]
pub enum ConvLayer {
    /// [`FastConv2d`], ReLU fused in (the activation after it when it is not ReLU).
    Fast(FastConv2d, Activation),
    /// candle's `Conv2d`, then the activation.
    Candle(Conv2d, Activation),
    /// [`GemmConv2d`], then the activation.
    Gemm(GemmConv2d, Activation),
    /// A 1-D convolution on candle's ops, ReLU included (1-D encoders have no other).
    Candle1d(CandleConv1d),
}

impl Module for ConvLayer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Fast(c, Activation::Relu) => c.forward(xs),
            Self::Fast(c, a) => activate(&c.forward(xs)?, *a),
            Self::Candle(c, a) => activate(&c.forward(xs)?, *a),
            Self::Gemm(c, a) => activate(&c.forward(xs)?, *a),
            Self::Candle1d(c) => c.forward(xs),
        }
    }
}

/// Maps a flat sample batch to latent vectors `z`.
#[derive(Debug, Clone)]
pub enum Encoder {
    /// Convolutions (2-D, or 1-D as one-row images), then flatten or pooling over time, then linear.
    Conv {
        /// The layer specification it was built from.
        spec: EncoderSpec,
        /// Input image shape (a series as a one-row image).
        input: ImageShape,
        /// Convolutions, the activation after each.
        convs: Vec<ConvLayer>,
        /// Dense layers on the flattened feature map, the activation after each.
        hidden: Vec<Linear>,
        /// Linear layer to the latent space.
        latent: Linear,
        /// Run the convolutions on channels-last `[b, h, w, c]` activations (fast backend).
        channels_last: bool,
    },
    /// Dense layers with ReLU, then linear.
    Dense {
        /// The layer specification it was built from.
        spec: EncoderSpec,
        /// Hidden layers.
        hidden: Vec<Linear>,
        /// Linear layer to the latent space.
        latent: Linear,
    },
}

impl Encoder {
    /// Builds the encoder's layers under their export names (`encoder.conv0`, ...).
    pub fn new(spec: &EncoderSpec, vb: &VarBuilder, backend: ConvBackend) -> Result<Self> {
        let pre = spec.pre_latent_len().map_err(candle_core::Error::wrap)?;
        let latent = linear(vb, names::LATENT, pre, spec.latent_dim())?;
        let temporal = matches!(spec, EncoderSpec::Conv1d { .. });
        let activation = spec.activation();
        Ok(match spec.stack() {
            Stack::Conv(input) => {
                let geometry = spec.conv_geometry().map_err(candle_core::Error::wrap)?;
                let convs = geometry
                    .iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let (cin, cout, vb) =
                            (g.input.channels, g.output.channels, vb.pp(names::conv(i)));
                        let k = g.kernel.width;
                        let relu = activation == Activation::Relu;
                        Ok(match backend {
                            ConvBackend::Fast => ConvLayer::Fast(
                                FastConv2d::new(*g, temporal, relu, vb)?,
                                activation,
                            ),
                            ConvBackend::Candle if temporal => {
                                ConvLayer::Candle1d(CandleConv1d::new(*g, vb)?)
                            }
                            ConvBackend::Gemm => {
                                ConvLayer::Gemm(GemmConv2d::new(*g, temporal, vb)?, activation)
                            }
                            ConvBackend::Candle => {
                                let cfg = Conv2dConfig {
                                    padding: g.pad.width,
                                    stride: g.stride,
                                    ..Default::default()
                                };
                                ConvLayer::Candle(
                                    candle_nn::conv2d(cin, cout, k, cfg, vb)?,
                                    activation,
                                )
                            }
                        })
                    })
                    .collect::<Result<_>>()?;
                let flat = spec.conv_out_len().map_err(candle_core::Error::wrap)?;
                let widths = std::iter::once(flat).chain(spec.conv_hidden().iter().copied());
                let hidden = widths
                    .zip(spec.conv_hidden())
                    .enumerate()
                    .map(|(i, (a, &b))| linear(vb, &names::dense(i), a, b))
                    .collect::<Result<_>>()?;
                Self::Conv {
                    spec: spec.clone(),
                    input,
                    convs,
                    hidden,
                    latent,
                    channels_last: backend == ConvBackend::Fast,
                }
            }
            Stack::Dense { input, hidden } => {
                let widths = std::iter::once(input).chain(hidden.iter().copied());
                let hidden = widths
                    .clone()
                    .zip(hidden.iter())
                    .enumerate()
                    .map(|(i, (a, &b))| linear(vb, &names::dense(i), a, b))
                    .collect::<Result<_>>()?;
                Self::Dense {
                    spec: spec.clone(),
                    hidden,
                    latent,
                }
            }
        })
    }
}

impl Encoder {
    /// The layer before the latent one, `[b, pre_latent_len]`: the last convolution's feature
    /// map, flattened channels-first or averaged over time, or the last hidden layer.
    fn pre_latent(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Conv {
                spec,
                input,
                convs,
                hidden,
                channels_last,
                ..
            } => {
                let b = xs.dim(0)?;
                let mut h = xs.reshape((b, input.channels, input.height, input.width))?;
                if *channels_last {
                    h = to_channels_last(&h)?;
                }
                for c in convs {
                    h = c.forward(&h)?;
                }
                if spec.pooled() {
                    // One row: time is the width axis.
                    let width = if *channels_last { 2 } else { 3 };
                    return pool_over_time(&h, width, spec.pooling());
                }
                if *channels_last {
                    h = to_channels_first(&h)?;
                }
                let mut h = h.flatten_from(1)?;
                for l in hidden {
                    h = activate(&l.forward(&h)?, spec.activation())?;
                }
                Ok(h)
            }
            Self::Dense { hidden, .. } => {
                let mut h = xs.clone();
                for l in hidden {
                    h = l.forward(&h)?.relu()?;
                }
                Ok(h)
            }
        }
    }
}

impl Encoder {
    /// The specification the encoder was built from.
    pub fn spec(&self) -> &EncoderSpec {
        match self {
            Self::Conv { spec, .. } | Self::Dense { spec, .. } => spec,
        }
    }

    /// The latent layer's output, before the spec's softmax tail: what a loss on the tail's
    /// logits (ClusterGAN's cross-entropy on its cluster code) reads.
    pub fn forward_linear(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.pre_latent(xs)?;
        match self {
            Self::Conv { latent, .. } | Self::Dense { latent, .. } => latent.forward(&h),
        }
    }
}

impl Module for Encoder {
    /// The latent vectors, the last [`EncoderSpec::softmax_tail`] values of each through a
    /// softmax, as the edge runtime computes them.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let z = self.forward_linear(xs)?;
        let tail = self.spec().softmax_tail();
        if tail == 0 {
            return Ok(z);
        }
        let d = z.dim(1)?;
        let code = candle_nn::ops::softmax_last_dim(&z.narrow(1, d - tail, tail)?.contiguous()?)?;
        if tail == d {
            return Ok(code);
        }
        Tensor::cat(&[z.narrow(1, 0, d - tail)?, code], 1)
    }
}

/// Summary over `axis` (time) of a one-row feature map, `[b, channels]` or, with the standard
/// deviation, `[b, 2·channels]`, the values the edge encoder's pooling gives.
fn pool_over_time(h: &Tensor, axis: usize, pooling: TimePooling) -> Result<Tensor> {
    let mean = h.mean_keepdim(axis)?;
    let flat = |t: &Tensor| t.flatten_from(1);
    if pooling != TimePooling::MeanStd {
        return flat(&mean);
    }
    let var = h.broadcast_sub(&mean)?.sqr()?.mean_keepdim(axis)?;
    let sd = (var + f64::from(POOL_EPS))?.sqrt()?;
    Tensor::cat(&[flat(&mean)?, flat(&sd)?], 1)
}

/// The transposed convolution of `g` (from `g.output` back onto `g.input`) on candle's ops,
/// channels-first.
pub(crate) fn candle_deconv(g: &ConvGeometry, vb: VarBuilder) -> Result<ConvTranspose2d> {
    let (ph, pw) = g.transpose_output_padding();
    if ph != pw {
        bail!("candle's transposed convolution needs equal output padding in both axes");
    }
    let cfg = ConvTranspose2dConfig {
        padding: g.pad.width,
        output_padding: ph,
        stride: g.stride,
        dilation: 1,
    };
    let (cin, cout) = (g.output.channels, g.input.channels);
    candle_nn::conv_transpose2d(cin, cout, g.kernel.width, cfg, vb)
}

/// Mirror of the encoder back to a flat reconstruction; used only in pretraining.
#[derive(Debug, Clone)]
pub struct Decoder {
    latent: Linear,
    /// Shape the latent layer's output is reshaped to before the transposed convolutions.
    unflatten: Option<ImageShape>,
    /// The encoder averaged over time: the latent layer gives one value per channel, repeated
    /// along the feature map's width.
    pooled: bool,
    /// Run the transposed convolutions on channels-last activations (fast backend).
    channels_last: bool,
    /// Dense layers back from the latent layer's output to the flattened feature map (a
    /// convolutional encoder's hidden layers, mirrored), the activation after each.
    hidden: Vec<Linear>,
    /// Layers applied in order; the activation after every one but the last.
    layers: Vec<DecoderLayer>,
    activation: Activation,
}

#[derive(Debug, Clone)]
enum DecoderLayer {
    FastDeconv(FastConvTranspose2d),
    Deconv(ConvTranspose2d),
    Deconv1d(CandleDeconv1d),
    GemmDeconv(GemmConvTranspose2d),
    Dense(Linear),
}

impl Decoder {
    /// Builds the decoder under `decoder.*` names; `decoder.deconv{i}` inverts `encoder.conv{i}`.
    pub fn new(spec: &EncoderSpec, vb: &VarBuilder, backend: ConvBackend) -> Result<Self> {
        // A pooled encoder's decoder starts from one value per channel, repeated over time.
        let geometry = spec.conv_geometry().map_err(candle_core::Error::wrap)?;
        let pre = match geometry.last() {
            Some(last) if spec.pooled() => last.output.channels,
            _ => spec.pre_latent_len().map_err(candle_core::Error::wrap)?,
        };
        let latent = linear(vb, "decoder.latent", spec.latent_dim(), pre)?;
        let temporal = matches!(spec, EncoderSpec::Conv1d { .. });
        let activation = spec.activation();
        let conv_hidden = spec.conv_hidden();
        let flat = spec.conv_out_len().map_err(candle_core::Error::wrap)?;
        let hidden = (0..conv_hidden.len())
            .rev()
            .map(|i| {
                let out = if i == 0 { flat } else { conv_hidden[i - 1] };
                linear(vb, &format!("decoder.dense{i}"), conv_hidden[i], out)
            })
            .collect::<Result<_>>()?;
        let (unflatten, layers) = match spec.stack() {
            Stack::Conv(_) => {
                let geometry = spec.conv_geometry().map_err(candle_core::Error::wrap)?;
                let mut layers = Vec::new();
                for (i, g) in geometry.iter().enumerate().rev() {
                    // ReLU fused into every transposed convolution but the output layer's
                    // (another activation follows it unfused).
                    let relu = i > 0 && activation == Activation::Relu;
                    let vb = vb.pp(format!("decoder.deconv{i}"));
                    layers.push(match backend {
                        ConvBackend::Fast => DecoderLayer::FastDeconv(FastConvTranspose2d::new(
                            *g, temporal, relu, vb,
                        )?),
                        ConvBackend::Candle if temporal => {
                            DecoderLayer::Deconv1d(CandleDeconv1d::new(*g, vb)?)
                        }
                        ConvBackend::Candle => DecoderLayer::Deconv(
                            candle_deconv(g, vb)
                                .map_err(|e| e.context(format!("decoder layer {i}")))?,
                        ),
                        ConvBackend::Gemm => {
                            DecoderLayer::GemmDeconv(GemmConvTranspose2d::new(*g, temporal, vb)?)
                        }
                    });
                }
                (geometry.last().map(|g| g.output), layers)
            }
            Stack::Dense { input, hidden } => {
                let mut layers = Vec::new();
                for i in (0..hidden.len()).rev() {
                    let out = if i == 0 { input } else { hidden[i - 1] };
                    layers.push(DecoderLayer::Dense(linear(
                        vb,
                        &format!("decoder.dense{i}"),
                        hidden[i],
                        out,
                    )?));
                }
                (None, layers)
            }
        };
        Ok(Self {
            latent,
            unflatten,
            pooled: spec.pooled(),
            channels_last: backend == ConvBackend::Fast,
            hidden,
            layers,
            activation,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let b = z.dim(0)?;
        let mut h = self.latent.forward(z)?;
        if self.layers.is_empty() && self.hidden.is_empty() {
            return Ok(h);
        }
        h = activate(&h, self.activation)?;
        for (i, d) in self.hidden.iter().enumerate() {
            h = d.forward(&h)?;
            // The reconstruction itself when no convolution follows: linear.
            if i + 1 < self.hidden.len() || !self.layers.is_empty() {
                h = activate(&h, self.activation)?;
            }
        }
        if self.layers.is_empty() {
            return Ok(h);
        }
        let swap = self.unflatten.is_some() && self.channels_last;
        if let Some(s) = self.unflatten {
            h = if self.pooled {
                h.reshape((b, s.channels, 1, 1))?
                    .broadcast_as((b, s.channels, s.height, s.width))?
                    .contiguous()?
            } else {
                h.reshape((b, s.channels, s.height, s.width))?
            };
            if swap {
                h = to_channels_last(&h)?;
            }
        }
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = match l {
                // Built with the ReLU fused in where one follows.
                DecoderLayer::FastDeconv(c) => c.forward(&h)?,
                DecoderLayer::Deconv(c) => c.forward(&h)?,
                DecoderLayer::Deconv1d(c) => c.forward(&h)?,
                DecoderLayer::GemmDeconv(c) => c.forward(&h)?,
                DecoderLayer::Dense(d) => d.forward(&h)?,
            };
            let fused =
                matches!(l, DecoderLayer::FastDeconv(_)) && self.activation == Activation::Relu;
            if i < last && !fused {
                h = activate(&h, self.activation)?;
            }
        }
        if swap {
            h = to_channels_first(&h)?;
        }
        h.flatten_from(1)
    }
}

/// Encoder plus decoder.
#[derive(Debug, Clone)]
pub struct Autoencoder {
    /// The part that is exported.
    pub encoder: Encoder,
    /// The part used only to pretrain.
    pub decoder: Decoder,
}

impl Autoencoder {
    /// Builds both halves on `vb`.
    pub fn new(spec: &EncoderSpec, vb: &VarBuilder, backend: ConvBackend) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(spec, vb, backend)?,
            decoder: Decoder::new(spec, vb, backend)?,
        })
    }

    /// Creates a fresh model in `varmap` on `dev` with weights drawn as `init` says from `seed`
    /// (candle's own initialisers use an unseeded generator), the same numbers on every device.
    pub fn init(
        spec: &EncoderSpec,
        varmap: &VarMap,
        seed: u64,
        backend: ConvBackend,
        init: Init,
        dev: &candle_core::Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, dev);
        let model = Self::new(spec, &vb, backend)?;
        reinit(varmap, seed, init)?;
        Ok(model)
    }
}

impl Module for Autoencoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.decoder.forward(&self.encoder.forward(xs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused kernels, the GPU's `gemm` layers and candle's own on the same variables:
    /// reconstruction shape, output and every variable's gradient of a squared reconstruction
    /// loss.
    fn backends_match_candle(spec: &EncoderSpec) {
        let vm = VarMap::new();
        let n = spec.input_len();
        let xs: Vec<f32> = (0..3 * n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let xs = Tensor::from_vec(xs, (3, n), &Device::Cpu).unwrap();
        let fast =
            Autoencoder::init(spec, &vm, 1, ConvBackend::Fast, Init::Torch, &Device::Cpu).unwrap();
        assert_eq!(
            fast.encoder.forward(&xs).unwrap().dims(),
            [3, spec.latent_dim()]
        );
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let reference = Autoencoder::new(spec, &vb, ConvBackend::Candle)
            .unwrap()
            .forward(&xs)
            .unwrap();
        let max_err = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let loss = |y: &Tensor| (y - &xs).unwrap().sqr().unwrap().sum_all().unwrap();
        let want = loss(&reference).backward().unwrap();
        let gemm = Autoencoder::new(spec, &vb, ConvBackend::Gemm).unwrap();
        for (name, model) in [("fast", fast), ("gemm", gemm)] {
            let out = model.forward(&xs).unwrap();
            assert_eq!(out.dims(), [3, n]);
            let err = max_err(&out, &reference);
            assert!(err < 1e-4, "{name} vs candle: {err}");
            let got = loss(&out).backward().unwrap();
            for var in vm.all_vars() {
                let (a, b) = (got.get(&var).unwrap(), want.get(&var).unwrap());
                let scale = b
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let err = max_err(a, b);
                assert!(
                    err <= 1e-4 * (1.0 + scale),
                    "{name}: gradient {var:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn conv_autoencoder_reconstructs_input_shape() {
        backends_match_candle(&EncoderSpec::paper_conv(
            ImageShape {
                channels: 2,
                height: 13,
                width: 13,
            },
            4,
        ));
    }

    /// ClusterGAN's kind of encoder (4x4 convolutions padded by a pixel, a hidden dense
    /// layer, leaky ReLU) and its mirror: the fused kernels equal candle's, and the edge
    /// kernels that embed the data equal the training graph.
    #[test]
    fn hidden_layers_and_leaky_relu_match_candle_and_the_edge_kernels() {
        use dekm_shared::{ConvSpec, Padding};
        let spec = EncoderSpec::Conv {
            input: ImageShape {
                channels: 2,
                height: 12,
                width: 12,
            },
            convs: vec![
                ConvSpec {
                    filters: 5,
                    kernel: 4,
                    stride: 2,
                    padding: Padding::Pixels(1),
                },
                ConvSpec {
                    filters: 7,
                    kernel: 4,
                    stride: 2,
                    padding: Padding::Pixels(1),
                },
            ],
            hidden: vec![9, 6],
            activation: Activation::LeakyRelu,
            latent: 4,
            softmax_tail: 0,
        };
        backends_match_candle(&spec);
        let vm = VarMap::new();
        let model =
            Autoencoder::init(&spec, &vm, 3, ConvBackend::Fast, Init::Torch, &Device::Cpu).unwrap();
        let n = spec.input_len();
        let xs: Vec<f32> = (0..5 * n)
            .map(|i| ((i * 29) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let xs = Tensor::from_vec(xs, (5, n), &Device::Cpu).unwrap();
        let graph: Vec<f32> = model
            .encoder
            .forward(&xs)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(model.encoder.on_edge_kernels().unwrap().is_some());
        let edge = embed(&model.encoder, &xs, 2).unwrap();
        for (a, b) in graph.iter().zip(&edge) {
            assert!(
                (a - b).abs() < 1e-5 * (1.0 + a.abs()),
                "graph {a} vs edge {b}"
            );
        }
        // The leaky slope is in use: some pre-activations are negative and pass scaled.
        let pre = model
            .encoder
            .pre_latent(&xs)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(pre.iter().any(|&v| v < 0.0), "no negative activations");
    }

    #[test]
    fn temporal_autoencoder_matches_candles_conv1d() {
        use dekm_shared::SeriesShape;
        for (channels, length) in [(6, 100), (3, 29), (2, 8)] {
            for pooling in [
                TimePooling::Flatten,
                TimePooling::Mean,
                TimePooling::MeanStd,
            ] {
                backends_match_candle(&EncoderSpec::paper_conv1d(
                    SeriesShape { channels, length },
                    pooling,
                    5,
                ));
            }
        }
    }

    #[test]
    fn init_is_seeded() {
        let spec = EncoderSpec::paper_dense(5, 3);
        let dump = |seed, init| {
            let vm = VarMap::new();
            Autoencoder::init(&spec, &vm, seed, ConvBackend::Fast, init, &Device::Cpu).unwrap();
            let data = vm.data().lock().unwrap();
            data["encoder.latent.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        for init in [Init::Torch, Init::Keras] {
            assert_eq!(dump(1, init), dump(1, init));
            assert_ne!(dump(1, init), dump(2, init));
        }
        let w = dump(1, Init::Torch);
        let bound = 1.0 / 2000f32.sqrt();
        assert!(w.iter().all(|x| x.abs() <= bound));
    }

    /// Each layer kind of the convolutional autoencoder gets the range its rule names, and the
    /// draws fill it (a bound that is off by a factor would show in the largest value).
    #[test]
    fn draws_follow_their_rule() {
        let spec = EncoderSpec::paper_conv(
            ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            10,
        );
        let vm = VarMap::new();
        Autoencoder::init(&spec, &vm, 3, ConvBackend::Fast, Init::Keras, &Device::Cpu).unwrap();
        let data = vm.data().lock().unwrap();
        let range = |name: &str| {
            let v = data[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (
                v.iter().fold(f32::INFINITY, |a, &x| a.min(x)),
                v.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)),
            )
        };
        let filled = |name: &str, bound: f32| {
            let (lo, hi) = range(name);
            assert!(
                lo >= -bound && hi <= bound,
                "{name}: [{lo}, {hi}] outside ±{bound}"
            );
            assert!(
                lo < -0.9 * bound && hi > 0.9 * bound,
                "{name}: [{lo}, {hi}] vs ±{bound}"
            );
        };
        filled("encoder.conv1.weight", 0.05);
        filled("encoder.latent.weight", (6.0f32 / (1152.0 + 10.0)).sqrt());
        filled("decoder.latent.weight", (6.0f32 / (1152.0 + 10.0)).sqrt());
        // Transposed convolution 64 -> 32 channels, 5x5.
        filled("decoder.deconv1.weight", (6.0f32 / (96.0 * 25.0)).sqrt());
        for bias in [
            "encoder.conv0.bias",
            "encoder.latent.bias",
            "decoder.deconv2.bias",
        ] {
            assert_eq!(range(bias), (0.0, 0.0), "{bias}");
        }
        drop(data);
        let vm = VarMap::new();
        Autoencoder::init(&spec, &vm, 3, ConvBackend::Fast, Init::Torch, &Device::Cpu).unwrap();
        let data = vm.data().lock().unwrap();
        let v = data["encoder.conv0.bias"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // PyTorch draws biases too, within 1/√(1·5·5).
        assert!(v.iter().any(|&x| x != 0.0) && v.iter().all(|x| x.abs() <= 0.2));
    }
}
