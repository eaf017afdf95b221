//! The encoder's layer specification and the shapes it implies.
//!
//! The trainer builds its candle modules from an [`EncoderSpec`] and the edge runtime builds its
//! buffers from the same spec read back from the model's metadata, so both derive identical shapes
//! from one function, [`EncoderSpec::conv_geometry`].

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ContractError;

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

/// Spatial padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Symmetric padding of `kernel / 2`, so a stride-`s` layer outputs `ceil(in / s)` for odd kernels.
    Same,
    /// No padding.
    Valid,
}

/// One convolution of the encoder (square kernel, ReLU after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Output channels.
    pub filters: usize,
    /// Kernel side length.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Padding mode.
    pub padding: Padding,
}

/// The encoder architecture; the decoder used in pretraining mirrors it and is not exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EncoderSpec {
    /// Convolutions with ReLU, flattened (CHW order), then one linear layer to the latent space.
    Conv {
        /// Input image shape.
        input: ImageShape,
        /// Convolution stack, first layer first.
        convs: Vec<ConvSpec>,
        /// Latent dimension (no activation on the latent layer).
        latent: usize,
    },
    /// Fully connected layers with ReLU, then one linear layer to the latent space.
    Dense {
        /// Input vector length.
        input: usize,
        /// Hidden layer widths, first layer first.
        hidden: Vec<usize>,
        /// Latent dimension (no activation on the latent layer).
        latent: usize,
    },
}

/// Resolved shape of one convolution: what the trainer and edge allocate for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input shape of the layer.
    pub input: ImageShape,
    /// Output shape of the layer.
    pub output: ImageShape,
    /// Kernel side length.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Symmetric padding in pixels.
    pub pad: usize,
}

impl ConvGeometry {
    /// `output_padding` a transposed convolution needs to map `output` back onto exactly `input`
    /// (height, width); always in `0..stride`.
    pub fn transpose_output_padding(&self) -> (usize, usize) {
        let back = |out: usize| (out - 1) * self.stride + self.kernel - 2 * self.pad;
        (
            self.input.height - back(self.output.height),
            self.input.width - back(self.output.width),
        )
    }
}

impl EncoderSpec {
    /// The convolutional encoder of DCEC/DEKM: 5x5/32 s2 same, 5x5/64 s2 same, 3x3/128 s2 valid,
    /// then linear to `latent`. For 28x28 inputs this flattens 128x3x3 = 1152 features.
    pub fn paper_conv(input: ImageShape, latent: usize) -> Self {
        let conv = |filters, kernel, padding| ConvSpec {
            filters,
            kernel,
            stride: 2,
            padding,
        };
        Self::Conv {
            input,
            convs: alloc::vec![
                conv(32, 5, Padding::Same),
                conv(64, 5, Padding::Same),
                conv(128, 3, Padding::Valid),
            ],
            latent,
        }
    }

    /// The dense encoder of DEC/DEKM for vector data: d-500-500-2000-latent.
    pub fn paper_dense(input: usize, latent: usize) -> Self {
        Self::Dense {
            input,
            hidden: alloc::vec![500, 500, 2000],
            latent,
        }
    }

    /// Number of values in one (preprocessed) input sample.
    pub fn input_len(&self) -> usize {
        match self {
            Self::Conv { input, .. } => input.len(),
            Self::Dense { input, .. } => *input,
        }
    }

    /// Latent dimension.
    pub fn latent_dim(&self) -> usize {
        match self {
            Self::Conv { latent, .. } | Self::Dense { latent, .. } => *latent,
        }
    }

    /// Shapes of every convolution (empty for a dense encoder), checking that each layer gets a
    /// non-empty input.
    pub fn conv_geometry(&self) -> Result<Vec<ConvGeometry>, ContractError> {
        let Self::Conv { input, convs, .. } = self else {
            return Ok(Vec::new());
        };
        let mut shape = *input;
        let mut out = Vec::with_capacity(convs.len());
        for (layer, c) in convs.iter().enumerate() {
            if c.kernel == 0 || c.stride == 0 || c.filters == 0 {
                return Err(ContractError::ZeroSize {
                    what: "convolution kernel, stride and filters",
                });
            }
            let pad = match c.padding {
                Padding::Same => c.kernel / 2,
                Padding::Valid => 0,
            };
            let too_small = ContractError::InputTooSmall {
                layer,
                height: shape.height,
                width: shape.width,
                kernel: c.kernel,
            };
            let side = |n: usize| {
                (n + 2 * pad)
                    .checked_sub(c.kernel)
                    .map(|s| s / c.stride + 1)
                    .filter(|_| n > 0)
            };
            let (Some(height), Some(width)) = (side(shape.height), side(shape.width)) else {
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
                kernel: c.kernel,
                stride: c.stride,
                pad,
            });
            shape = output;
        }
        Ok(out)
    }

    /// Width of the layer feeding the latent linear layer (flattened conv output or last hidden).
    pub fn pre_latent_len(&self) -> Result<usize, ContractError> {
        match self {
            Self::Conv { input, .. } => Ok(self
                .conv_geometry()?
                .last()
                .map_or(input.len(), |g| g.output.len())),
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
        if let Self::Dense { hidden, .. } = self
            && hidden.contains(&0)
        {
            return Err(ContractError::ZeroSize {
                what: "hidden layer width",
            });
        }
        self.pre_latent_len().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MNIST: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };

    #[test]
    fn paper_conv_on_mnist_flattens_1152_features() {
        let spec = EncoderSpec::paper_conv(MNIST, 10);
        let g = spec.conv_geometry().unwrap();
        let sides: Vec<_> = g.iter().map(|g| g.output.height).collect();
        assert_eq!(sides, [14, 7, 3]);
        assert_eq!(spec.pre_latent_len().unwrap(), 1152);
        let pads: Vec<_> = g.iter().map(|g| g.transpose_output_padding()).collect();
        assert_eq!(pads, [(1, 1), (1, 1), (0, 0)]);
    }

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
}
