//! The named encoders: DEKM's convolutions (2-D and over time) and dense stack, ClusterGAN's
//! networks, and the dense stack sized to a data set. What a spec means is `super`'s; here is
//! which specs the product trains.

use alloc::vec::Vec;

use super::{Activation, ConvSpec, EncoderSpec, ImageShape, Padding, SeriesShape, TimePooling};

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
            hidden: Vec::new(),
            activation: Activation::Relu,
            latent,
            softmax_tail: 0,
        }
    }

    /// ClusterGAN's encoder for images (Mukherjee et al., 2019, as their code builds it for
    /// MNIST and Fashion-MNIST): 4x4/64 s2 and 4x4/128 s2 convolutions padded by one pixel
    /// (28 → 14 → 7, TensorFlow's `SAME` on those sides), a dense layer of 1,024, leaky ReLU
    /// (0.2) after each, then linear to `latent`. About four times the multiply-adds of
    /// [`Self::paper_conv`] (26 against 6.7 million on MNIST).
    pub fn clustergan_conv(input: ImageShape, latent: usize) -> Self {
        let conv = |filters| ConvSpec {
            filters,
            kernel: 4,
            stride: 2,
            padding: Padding::Pixels(1),
        };
        Self::Conv {
            input,
            convs: alloc::vec![conv(64), conv(128)],
            hidden: alloc::vec![1024],
            activation: Activation::LeakyRelu,
            latent,
            softmax_tail: 0,
        }
    }

    /// The 1-D counterpart of [`Self::paper_conv`] for windows of a stream: 32 filters of 7
    /// steps, 64 of 5 and 128 of 3, each with stride 2, then linear to `latent`. The first two
    /// pad ("same"), the last does not, as in the 2-D stack. For 6 channels x 100 steps this
    /// flattens 128x12 = 1536 features. Series shorter than the stack can take lose layers
    /// from the end (at least one is kept), so short cases still get a temporal encoder.
    pub fn paper_conv1d(input: SeriesShape, pooling: TimePooling, latent: usize) -> Self {
        let conv = |filters, kernel, padding| ConvSpec {
            filters,
            kernel,
            stride: 2,
            padding,
        };
        let mut convs = alloc::vec![
            conv(32, 7, Padding::Same),
            conv(64, 5, Padding::Same),
            conv(128, 3, Padding::Valid),
        ];
        loop {
            let spec = Self::Conv1d {
                input,
                convs: convs.clone(),
                pooling,
                latent,
                softmax_tail: 0,
            };
            if convs.len() == 1 || spec.conv_geometry().is_ok() {
                return spec;
            }
            convs.pop();
        }
    }

    /// The dense encoder of DEC/DEKM for vector data: d-500-500-2000-latent.
    pub fn paper_dense(input: usize, latent: usize) -> Self {
        Self::Dense {
            input,
            hidden: alloc::vec![500, 500, 2000],
            latent,
            softmax_tail: 0,
        }
    }

    /// [`Self::sized_dense`]'s rule in words, for the trainer's report of the widths it chose.
    pub const SIZED_DENSE_RULE: &'static str =
        "two widths per feature, at most one per 16 samples, 32 to 500";

    /// A dense encoder sized to `input` features and `samples` training samples: DEC's
    /// d-500-500-2000-latent from 250 features and 8,000 samples up, narrower below (hidden
    /// widths w-w-4w, w = 2 x features but at most one per 16 samples, at least 32).
    ///
    /// Why: the paper's widths were chosen for 784 pixels and 70,000 images. On a 4- to
    /// 30-feature table they make every minibatch cost as much as an MNIST one for nothing a
    /// narrower stack does not learn, and the clustering stage on a few hundred samples spent a
    /// minute there; twice the features clustered the tabular sets and the demo's 96-value
    /// windows as well as four times did, the windows in half the time. On few samples of many
    /// features the full stack clusters worse and far slower: on 2,000 MNIST images as vectors
    /// (5 seeds, 2 cores) widths 500 gave ACC 0.695 in 100-130 s, 250 (one per 8 samples)
    /// 0.733 in 41 s, 125 (one per 16) 0.724 in 25 s; the demo's 999 windows and breast
    /// cancer's 569 rows clustered alike at every width tried (docs/RESULTS.md, "Vector data:
    /// the encoder sized to the samples too").
    pub fn sized_dense(input: usize, samples: usize, latent: usize) -> Self {
        // Keep [`Self::SIZED_DENSE_RULE`] in step with this line.
        let w = (2 * input).min(samples / 16).clamp(32, 500);
        Self::Dense {
            input,
            hidden: alloc::vec![w, w, 4 * w],
            latent,
            softmax_tail: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::MNIST;
    use super::super::*;

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
    fn clustergans_encoder_halves_mnist_twice_and_reads_1024_wide() {
        let spec = EncoderSpec::clustergan_conv(MNIST, 40);
        spec.validate().unwrap();
        let g = spec.conv_geometry().unwrap();
        let sides: Vec<_> = g
            .iter()
            .map(|g| (g.output.channels, g.output.height))
            .collect();
        assert_eq!(sides, [(64, 14), (128, 7)]);
        assert_eq!(g[0].pad, Extent::square(1));
        assert_eq!(spec.conv_out_len().unwrap(), 128 * 7 * 7);
        assert_eq!(spec.pre_latent_len().unwrap(), 1024);
        assert_eq!(spec.conv_hidden(), [1024]);
        assert_eq!(spec.activation(), Activation::LeakyRelu);
        assert!(spec.needs_network_version());
        // The transposed convolutions of a mirror restore 7 → 14 → 28 exactly.
        for g in &g {
            assert_eq!(g.transpose_output_padding(), (0, 0), "{g:?}");
        }
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.contains(r#""padding":{"pixels":1}"#)
                && json.contains(r#""hidden":[1024]"#)
                && json.contains(r#""activation":"leaky-relu""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<EncoderSpec>(&json).unwrap(), spec);
        // DEKM's spec keeps its JSON: no new fields written.
        let dekm = serde_json::to_string(&EncoderSpec::paper_conv(MNIST, 10)).unwrap();
        assert!(
            !dekm.contains("hidden") && !dekm.contains("activation"),
            "{dekm}"
        );
        assert!(!EncoderSpec::paper_conv(MNIST, 10).needs_network_version());
        let mut zero = spec.clone();
        if let EncoderSpec::Conv { hidden, .. } = &mut zero {
            hidden[0] = 0;
        }
        assert!(zero.validate().is_err());
        assert_eq!(Activation::LeakyRelu.apply(-2.0), -0.4);
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert_eq!(Activation::LeakyRelu.apply(3.0), 3.0);
    }

    #[test]
    fn paper_conv1d_keeps_one_row_and_halves_time() {
        let input = SeriesShape {
            channels: 6,
            length: 100,
        };
        let spec = EncoderSpec::paper_conv1d(input, TimePooling::Flatten, 10);
        let g = spec.conv_geometry().unwrap();
        let out: Vec<_> = g
            .iter()
            .map(|g| (g.output.channels, g.output.height, g.output.width))
            .collect();
        assert_eq!(out, [(32, 1, 50), (64, 1, 25), (128, 1, 12)]);
        assert_eq!(spec.pre_latent_len().unwrap(), 1536);
        assert_eq!(
            g[0].kernel,
            Extent {
                height: 1,
                width: 7
            }
        );
        assert_eq!(
            g[0].pad,
            Extent {
                height: 0,
                width: 3
            }
        );
        assert_eq!(g[0].patch_len(), 42);
        for g in &g {
            let (ph, pw) = g.transpose_output_padding();
            assert_eq!(ph, 0, "{g:?}");
            assert!(pw < g.stride, "{g:?}");
        }
        assert_eq!(spec.input_len(), 600);
        let pooled = EncoderSpec::paper_conv1d(input, TimePooling::Mean, 10);
        assert!(pooled.pooled() && !spec.pooled());
        assert_eq!(pooled.pre_latent_len().unwrap(), 128);
        let stats = EncoderSpec::paper_conv1d(input, TimePooling::MeanStd, 10);
        assert_eq!(stats.pre_latent_len().unwrap(), 256);
        let json = serde_json::to_string(&stats).unwrap();
        assert!(json.contains(r#""pooling":"mean-std""#), "{json}");
        for p in TimePooling::ALL {
            assert_eq!(p.name().parse::<TimePooling>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
        }
        let err = "max".parse::<TimePooling>().unwrap_err();
        assert!(
            err.to_string().contains("flatten, mean or mean-std"),
            "{err}"
        );
    }

    #[test]
    fn short_series_keep_the_layers_they_can_take() {
        let convs = |length| match EncoderSpec::paper_conv1d(
            SeriesShape {
                channels: 2,
                length,
            },
            TimePooling::Mean,
            4,
        ) {
            EncoderSpec::Conv1d { convs, .. } => convs.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(convs(29), 3);
        assert_eq!(convs(9), 3);
        assert_eq!(convs(8), 2);
        assert_eq!(convs(3), 2);
        // One step cannot take even the first layer: kept, and validation names it.
        let one = EncoderSpec::paper_conv1d(
            SeriesShape {
                channels: 2,
                length: 1,
            },
            TimePooling::Flatten,
            4,
        );
        assert!(one.validate().is_ok(), "same padding takes one step");
        let valid = EncoderSpec::Conv1d {
            input: SeriesShape {
                channels: 2,
                length: 2,
            },
            convs: vec![ConvSpec {
                filters: 4,
                kernel: 3,
                stride: 1,
                padding: Padding::Valid,
            }],
            pooling: TimePooling::Flatten,
            latent: 2,
            softmax_tail: 0,
        };
        let err = valid.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer 0: input 1x2 is too small for a 1x3 kernel"
        );
    }

    #[test]
    fn a_dense_encoder_is_sized_to_its_features_and_samples_up_to_the_papers() {
        let hidden = |d, n| match EncoderSpec::sized_dense(d, n, 10) {
            EncoderSpec::Dense { hidden, .. } => hidden,
            other => panic!("{other:?}"),
        };
        // Many samples: two widths per feature, at least 32, at most the paper's 500.
        assert_eq!(hidden(4, 70_000), [32, 32, 128]);
        assert_eq!(hidden(30, 70_000), [60, 60, 240]);
        assert_eq!(hidden(96, 70_000), [192, 192, 768]);
        assert_eq!(hidden(250, 70_000), [500, 500, 2000]);
        assert_eq!(
            EncoderSpec::sized_dense(784, 8_000, 10),
            EncoderSpec::paper_dense(784, 10)
        );
        // Few samples: one width per 16 of them, still at least 32.
        assert_eq!(hidden(784, 2_000), [125, 125, 500]);
        assert_eq!(hidden(96, 999), [62, 62, 248]);
        assert_eq!(hidden(30, 569), [35, 35, 140]);
        assert_eq!(hidden(54, 80), [32, 32, 128]);
    }
}
