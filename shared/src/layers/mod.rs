//! The encoder's layer specification and the shapes it implies.
//!
//! The trainer builds its candle modules from an [`EncoderSpec`] and the edge runtime builds its
//! buffers from the same spec read back from the model's metadata, so both derive identical shapes
//! from one function, [`EncoderSpec::conv_geometry`].
//!
//! The named encoders the product trains ([`EncoderSpec::paper_conv`], ...) are in `presets`.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ContractError;

mod presets;

/// Channels, height and width of an image input (CHW order, as stored in a sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Number of channels (1 for grey-scale).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// Number of values in one sample.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when the shape holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Channels and length of a multichannel series (a window of a stream, or a `.ts` case), stored
/// channel-major: all of channel 0's readings in time order, then channel 1's, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesShape {
    /// Number of channels (sensor axes).
    pub channels: usize,
    /// Readings per channel.
    pub length: usize,
}

impl SeriesShape {
    /// Number of values in one sample.
    pub fn len(&self) -> usize {
        self.channels * self.length
    }

    /// True when the shape holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same values seen as a one-row image (`channels x 1 x length`): the layout a 1-D
    /// convolution shares with the 2-D machinery.
    pub fn as_image(&self) -> ImageShape {
        ImageShape {
            channels: self.channels,
            height: 1,
            width: self.length,
        }
    }
}

/// How a 1-D encoder's last feature map becomes the latent layer's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimePooling {
    /// Every step of every channel, channels-first: where in the window a pattern falls
    /// matters, as in the 2-D encoder.
    Flatten,
    /// Each channel's mean over time (the global average pooling of FCN, Wang et al. 2017): a
    /// pattern counts the same wherever it falls in the window.
    Mean,
    /// Each channel's mean, then each channel's standard deviation over time (the statistics
    /// pooling of x-vectors, Snyder et al. 2018), `sqrt(variance + POOL_EPS)`: how much a
    /// feature varies over the window, besides how much of it there is.
    #[serde(rename = "mean-std")]
    MeanStd,
}

impl TimePooling {
    /// Every pooling, in the order a listing shows them.
    pub const ALL: [Self; 3] = [Self::Flatten, Self::Mean, Self::MeanStd];

    /// The name a command line, a request and the model metadata spell it with.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flatten => "flatten",
            Self::Mean => "mean",
            Self::MeanStd => "mean-std",
        }
    }
}

impl core::fmt::Display for TimePooling {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for TimePooling {
    type Err = ContractError;
    fn from_str(s: &str) -> Result<Self, ContractError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ContractError::UnknownName {
                what: "pooling over time",
                name: s.into(),
                expected: "flatten, mean or mean-std",
            })
    }
}

/// Added to a variance before its square root in [`TimePooling::MeanStd`], so a feature that
/// is constant over the window has a finite gradient; trainer and edge use the same value.
pub const POOL_EPS: f32 = 1e-5;

/// Sizes along an image's two axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Along rows.
    pub height: usize,
    /// Along columns.
    pub width: usize,
}

impl Extent {
    /// The same size along both axes.
    pub fn square(side: usize) -> Self {
        Self {
            height: side,
            width: side,
        }
    }

    /// `height x width`.
    pub fn area(&self) -> usize {
        self.height * self.width
    }
}

/// Spatial padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Symmetric padding of `kernel / 2`, so a stride-`s` layer outputs `ceil(in / s)` for odd kernels.
    Same,
    /// No padding.
    Valid,
    /// Symmetric padding of this many pixels on each side (PyTorch's `padding=n`): what an
    /// even kernel needs to halve a side with stride 2 (`4x4`, 1 pixel: 28 → 14 → 7, the
    /// output TensorFlow's `SAME` gives ClusterGAN's layers). JSON `{"pixels": n}`.
    Pixels(usize),
}

/// The nonlinearity after every layer of an encoder but the latent one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(x, 0)`: every encoder the product trains by default.
    #[default]
    Relu,
    /// `max(x, 0.2 x)` ([`LEAKY_SLOPE`]): ClusterGAN's encoder, as its paper has it.
    LeakyRelu,
}

/// The slope of [`Activation::LeakyRelu`] for negative inputs (ClusterGAN's 0.2); trainer and
/// edge use this one value.
pub const LEAKY_SLOPE: f32 = 0.2;

impl Activation {
    /// The slope for negative inputs: 0 for ReLU.
    pub fn slope(self) -> f32 {
        match self {
            Self::Relu => 0.0,
            Self::LeakyRelu => LEAKY_SLOPE,
        }
    }

    /// The activation of one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Relu => x.max(0.0),
            Self::LeakyRelu => x.max(LEAKY_SLOPE * x),
        }
    }

    fn is_relu(&self) -> bool {
        *self == Self::Relu
    }
}

/// One convolution of the encoder, the activation after it: a square kernel in a 2-D encoder, a
/// `kernel`-long filter over time in a 1-D one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Output channels.
    pub filters: usize,
    /// Kernel side length (2-D) or length in time steps (1-D).
    pub kernel: usize,
    /// Stride in both directions (2-D) or along time (1-D).
    pub stride: usize,
    /// Padding mode.
    pub padding: Padding,
}

/// The encoder architecture; the decoder used in pretraining mirrors it and is not exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EncoderSpec {
    /// Convolutions with ReLU (or `activation`), flattened (CHW order), then the `hidden`
    /// dense layers with the same activation, if any, then one linear layer to the latent space.
    Conv {
        /// Input image shape.
        input: ImageShape,
        /// Convolution stack, first layer first.
        convs: Vec<ConvSpec>,
        /// Widths of dense layers between the flattened feature map and the latent layer
        /// (ClusterGAN's 1,024); empty (the default, left out of the JSON) for none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hidden: Vec<usize>,
        /// The nonlinearity after every layer but the latent one; ReLU (the default, left out
        /// of the JSON) unless given.
        #[serde(default, skip_serializing_if = "Activation::is_relu")]
        activation: Activation,
        /// Latent dimension (no activation on the latent layer but the softmax tail's).
        latent: usize,
        /// The last `softmax_tail` latent values pass through a softmax ([`crate::softmax_tail`]):
        /// ClusterGAN's cluster code, a point on the simplex; 0 (the default, left out of the
        /// JSON) for a linear latent.
        #[serde(default, skip_serializing_if = "is_zero")]
        softmax_tail: usize,
    },
    /// Convolutions over time with ReLU on a channel-major series (sensor channels are the
    /// input channels), flattened channels-first, then one linear layer to the latent space.
    /// Weights are `[out, in, kernel]`, PyTorch's `Conv1d` layout.
    Conv1d {
        /// Input series shape.
        input: SeriesShape,
        /// Convolution stack, first layer first.
        convs: Vec<ConvSpec>,
        /// How the last feature map reaches the latent layer.
        pooling: TimePooling,
        /// Latent dimension (no activation on the latent layer but the softmax tail's).
        latent: usize,
        /// The last `softmax_tail` latent values pass through a softmax ([`crate::softmax_tail`]):
        /// ClusterGAN's cluster code, a point on the simplex; 0 (the default, left out of the
        /// JSON) for a linear latent.
        #[serde(default, skip_serializing_if = "is_zero")]
        softmax_tail: usize,
    },
    /// Fully connected layers with ReLU, then one linear layer to the latent space.
    Dense {
        /// Input vector length.
        input: usize,
        /// Hidden layer widths, first layer first.
        hidden: Vec<usize>,
        /// Latent dimension (no activation on the latent layer but the softmax tail's).
        latent: usize,
        /// The last `softmax_tail` latent values pass through a softmax ([`crate::softmax_tail`]):
        /// ClusterGAN's cluster code, a point on the simplex; 0 (the default, left out of the
        /// JSON) for a linear latent.
        #[serde(default, skip_serializing_if = "is_zero")]
        softmax_tail: usize,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An encoder's layers before the latent one, as [`EncoderSpec::stack`] sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack<'a> {
    /// Convolutions (2-D, or 1-D as one-row images) on this input; their shapes come from
    /// [`EncoderSpec::conv_geometry`].
    Conv(ImageShape),
    /// Fully connected layers.
    Dense {
        /// Input vector length.
        input: usize,
        /// Hidden layer widths.
        hidden: &'a [usize],
    },
}

/// Resolved shape of one convolution: what the trainer and edge allocate for it. A 1-D
/// convolution is the one-row case: input height 1, kernel `1 x k`, no padding in height (so
/// the stride, shared by both axes, leaves the single row alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input shape of the layer.
    pub input: ImageShape,
    /// Output shape of the layer.
    pub output: ImageShape,
    /// Kernel rows and columns.
    pub kernel: Extent,
    /// Stride along both axes.
    pub stride: usize,
    /// Symmetric padding in pixels along each axis.
    pub pad: Extent,
}

impl ConvGeometry {
    /// `output_padding` a transposed convolution needs to map `output` back onto exactly `input`
    /// (height, width); always in `0..stride`.
    pub fn transpose_output_padding(&self) -> (usize, usize) {
        let back = |out: usize, k: usize, pad: usize| (out - 1) * self.stride + k - 2 * pad;
        (
            self.input.height - back(self.output.height, self.kernel.height, self.pad.height),
            self.input.width - back(self.output.width, self.kernel.width, self.pad.width),
        )
    }

    /// Multiply-adds per output value: kernel taps times input channels.
    pub fn patch_len(&self) -> usize {
        self.kernel.area() * self.input.channels
    }
}

impl EncoderSpec {
    /// Number of values in one (preprocessed) input sample.
    pub fn input_len(&self) -> usize {
        match self {
            Self::Conv { input, .. } => input.len(),
            Self::Conv1d { input, .. } => input.len(),
            Self::Dense { input, .. } => *input,
        }
    }

    /// Latent dimension.
    pub fn latent_dim(&self) -> usize {
        match self {
            Self::Conv { latent, .. }
            | Self::Conv1d { latent, .. }
            | Self::Dense { latent, .. } => *latent,
        }
    }

    /// How many of the last latent values pass through a softmax (0: none).
    pub fn softmax_tail(&self) -> usize {
        match self {
            Self::Conv { softmax_tail, .. }
            | Self::Conv1d { softmax_tail, .. }
            | Self::Dense { softmax_tail, .. } => *softmax_tail,
        }
    }

    /// The same encoder with its last `k` latent values passed through a softmax.
    pub fn with_softmax_tail(mut self, k: usize) -> Self {
        match &mut self {
            Self::Conv { softmax_tail, .. }
            | Self::Conv1d { softmax_tail, .. }
            | Self::Dense { softmax_tail, .. } => *softmax_tail = k,
        }
        self
    }

    /// The same encoder with `latent` outputs.
    pub fn with_latent(mut self, dim: usize) -> Self {
        match &mut self {
            Self::Conv { latent, .. }
            | Self::Conv1d { latent, .. }
            | Self::Dense { latent, .. } => *latent = dim,
        }
        self
    }

    /// The input as the convolutions see it: the image, or the series as a one-row image;
    /// `None` for a dense encoder.
    pub fn conv_input(&self) -> Option<ImageShape> {
        match self.stack() {
            Stack::Conv(input) => Some(input),
            Stack::Dense { .. } => None,
        }
    }

    /// The layers before the latent one, by how they compute: runtimes build convolutions
    /// from [`Self::conv_geometry`] alike for 2-D and 1-D specs.
    pub fn stack(&self) -> Stack<'_> {
        match self {
            Self::Conv { input, .. } => Stack::Conv(*input),
            Self::Conv1d { input, .. } => Stack::Conv(input.as_image()),
            Self::Dense { input, hidden, .. } => Stack::Dense {
                input: *input,
                hidden,
            },
        }
    }

    /// Shapes of every convolution (empty for a dense encoder), checking that each layer gets a
    /// non-empty input.
    pub fn conv_geometry(&self) -> Result<Vec<ConvGeometry>, ContractError> {
        let (input, convs, temporal) = match self {
            Self::Conv { input, convs, .. } => (*input, convs, false),
            Self::Conv1d { input, convs, .. } => (input.as_image(), convs, true),
            Self::Dense { .. } => return Ok(Vec::new()),
        };
        let mut shape = input;
        let mut out = Vec::with_capacity(convs.len());
        for (layer, c) in convs.iter().enumerate() {
            if c.kernel == 0 || c.stride == 0 || c.filters == 0 {
                return Err(ContractError::ZeroSize {
                    what: "convolution kernel, stride and filters",
                });
            }
            let kernel = if temporal {
                Extent {
                    height: 1,
                    width: c.kernel,
                }
            } else {
                Extent::square(c.kernel)
            };
            let pad_of = |k: usize| match c.padding {
                Padding::Same => k / 2,
                Padding::Valid => 0,
                Padding::Pixels(n) => n,
            };
            // A 1-D layer's single row is never padded.
            let pad = Extent {
                height: if temporal { 0 } else { pad_of(kernel.height) },
                width: pad_of(kernel.width),
            };
            let too_small = ContractError::InputTooSmall {
                layer,
                height: shape.height,
                width: shape.width,
                kernel_height: kernel.height,
                kernel_width: kernel.width,
            };
            let side = |n: usize, k: usize, pad: usize| {
                (n + 2 * pad)
                    .checked_sub(k)
                    .map(|s| s / c.stride + 1)
                    .filter(|_| n > 0)
            };
            let (Some(height), Some(width)) = (
                side(shape.height, kernel.height, pad.height),
                side(shape.width, kernel.width, pad.width),
            ) else {
                return Err(too_small);
            };
            let output = ImageShape {
                channels: c.filters,
                height,
                width,
            };
            out.push(ConvGeometry {
                input: shape,
                output,
                kernel,
                stride: c.stride,
                pad,
            });
            shape = output;
        }
        Ok(out)
    }

    /// How the last feature map reaches the latent layer: [`TimePooling::Flatten`] for every
    /// encoder but a pooled 1-D one.
    pub fn pooling(&self) -> TimePooling {
        match self {
            Self::Conv1d { pooling, .. } => *pooling,
            _ => TimePooling::Flatten,
        }
    }

    /// True when the last feature map is summarised over time before the latent layer.
    pub fn pooled(&self) -> bool {
        self.pooling() != TimePooling::Flatten
    }

    /// Width of the layer feeding the latent linear layer: the last hidden layer, or the
    /// flattened or pooled convolution output ([`Self::conv_out_len`]).
    pub fn pre_latent_len(&self) -> Result<usize, ContractError> {
        match self {
            Self::Conv { hidden, .. } if !hidden.is_empty() => Ok(hidden[hidden.len() - 1]),
            _ => self.conv_out_len(),
        }
    }

    /// Dense layers after a convolutional stack's flattened output, first first (empty for
    /// every spec but a [`Self::Conv`] that has them; a dense encoder's are its whole stack,
    /// [`Stack::Dense`]).
    pub fn conv_hidden(&self) -> &[usize] {
        match self {
            Self::Conv { hidden, .. } => hidden,
            _ => &[],
        }
    }

    /// The nonlinearity after every layer but the latent one.
    pub fn activation(&self) -> Activation {
        match self {
            Self::Conv { activation, .. } => *activation,
            _ => Activation::Relu,
        }
    }

    /// True when the spec uses what format version 7 added ([`Self::conv_hidden`], a leaky
    /// activation, [`Padding::Pixels`]): a runtime before it would skip the unknown fields and
    /// compute other latents, so it must refuse the model by its version.
    pub fn needs_network_version(&self) -> bool {
        let pixels = match self {
            Self::Conv { convs, .. } | Self::Conv1d { convs, .. } => convs
                .iter()
                .any(|c| matches!(c.padding, Padding::Pixels(_))),
            Self::Dense { .. } => false,
        };
        pixels || !self.conv_hidden().is_empty() || self.activation() != Activation::Relu
    }

    /// Width of what the convolutions hand on (the last feature map flattened, or its summary
    /// over time), or of the last hidden layer of a dense encoder.
    pub fn conv_out_len(&self) -> Result<usize, ContractError> {
        if self.pooled() {
            let last = self
                .conv_geometry()?
                .last()
                .map_or(0, |g| g.output.channels);
            let stats = if self.pooling() == TimePooling::MeanStd {
                2
            } else {
                1
            };
            return Ok(stats * last);
        }
        match self {
            Self::Conv { .. } | Self::Conv1d { .. } => Ok(self
                .conv_geometry()?
                .last()
                .map_or(self.input_len(), |g| g.output.len())),
            Self::Dense { input, hidden, .. } => Ok(*hidden.last().unwrap_or(input)),
        }
    }

    /// Checks every derived size; call once on any spec read from outside.
    pub fn validate(&self) -> Result<(), ContractError> {
        if self.latent_dim() == 0 {
            return Err(ContractError::ZeroSize {
                what: "latent dimension",
            });
        }
        if self.input_len() == 0 {
            return Err(ContractError::ZeroSize { what: "input size" });
        }
        if self.softmax_tail() > self.latent_dim() {
            return Err(ContractError::BadMetadata(alloc::format!(
                "a softmax over the last {} latent values of {}",
                self.softmax_tail(),
                self.latent_dim()
            )));
        }
        if let Self::Dense { hidden, .. } | Self::Conv { hidden, .. } = self
            && hidden.contains(&0)
        {
            return Err(ContractError::ZeroSize {
                what: "hidden layer width",
            });
        }
        if self.pooled() && self.conv_geometry()?.is_empty() {
            return Err(ContractError::ZeroSize {
                what: "convolutions of an encoder pooled over time",
            });
        }
        self.pre_latent_len().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MNIST's image shape, for the tests here and in `presets`.
    pub(super) const MNIST: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };

    #[test]
    fn odd_and_multichannel_sizes_round_trip_through_transpose() {
        for side in [9, 13, 17, 29, 32, 33] {
            let input = ImageShape {
                channels: 3,
                height: side,
                width: side,
            };
            for g in EncoderSpec::paper_conv(input, 10).conv_geometry().unwrap() {
                let (ph, pw) = g.transpose_output_padding();
                assert!(ph < g.stride && pw < g.stride, "side {side}: {g:?}");
            }
        }
    }

    #[test]
    fn too_small_input_is_an_error_naming_the_layer() {
        let input = ImageShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let err = EncoderSpec::paper_conv(input, 10).validate().unwrap_err();
        assert!(
            matches!(err, ContractError::InputTooSmall { layer: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn zero_latent_is_rejected() {
        let err = EncoderSpec::paper_dense(8, 0).validate().unwrap_err();
        assert_eq!(
            err,
            ContractError::ZeroSize {
                what: "latent dimension"
            }
        );
    }

    #[test]
    fn spec_serialises_to_tagged_json() {
        let spec = EncoderSpec::paper_dense(96, 10);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"dense","input":96,"hidden":[500,500,2000],"latent":10}"#
        );
        assert_eq!(serde_json::from_str::<EncoderSpec>(&json).unwrap(), spec);
    }

    /// The tail is left out of the JSON when absent (older models read and write unchanged),
    /// written when present, and may not be longer than the latent vector.
    #[test]
    fn a_softmax_tail_round_trips_and_must_fit_the_latent() {
        let spec = EncoderSpec::paper_conv(MNIST, 40).with_softmax_tail(10);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.ends_with(r#""latent":40,"softmax_tail":10}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<EncoderSpec>(&json).unwrap(), spec);
        assert!(spec.validate().is_ok());
        let err = spec.with_latent(9).validate().unwrap_err();
        assert!(
            err.to_string().contains("last 10 latent values of 9"),
            "{err}"
        );
    }
}
