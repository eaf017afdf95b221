//! BERT's forward pass on the CPU, written for throughput: every text at its own length (no
//! padding, so no token is computed twice as long as the batch's longest), the batch's tokens
//! through each dense layer as one matrix product (query, key and value fused into one), the
//! attention of each text on its own thread, and the element-wise steps vectorised.
//!
//! It computes what candle-transformers' `BertModel` computes (post-norm BERT: embeddings and
//! LayerNorm, then per layer self-attention, residual and LayerNorm, the GELU feed-forward,
//! residual and LayerNorm), which the embedder still runs on GPUs; the crate's tests hold the
//! two to each other. Why a second implementation: on 2 CPU threads candle's took twice as
//! long per text as sentence-transformers on PyTorch (docs/RESULTS.md, "Texts"), with half of
//! the time outside the matrix products: padding, a thread barrier per small product, and
//! scalar `erff`/`expf`.

mod ops;

use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use dekm_kernels::{Operand, gemm};
use rayon::prelude::*;

use crate::EmbedError;
use ops::Activation;

/// One text's tokens: ids and token types, the same length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tokens<'a> {
    pub(crate) ids: &'a [u32],
    pub(crate) types: &'a [u32],
}

/// A layer normalisation's scale and shift.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// `y = x Wᵀ + b` with `W` stored `[out, in]` as PyTorch and safetensors keep it.
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
}

impl Dense {
    /// `y` (`rows × out`) from `x` (`rows × in`).
    fn forward(&self, x: &[f32], y: &mut Vec<f32>, threads: usize) {
        let (n_out, rows) = (self.b.len(), x.len() / self.n_in);
        y.resize(rows * n_out, 0.0);
        ops::fill_rows(y, &self.b);
        gemm(
            (rows, n_out, self.n_in),
            Operand::rows(x, self.n_in),
            Operand::transposed(&self.w, self.n_in),
            (y, n_out),
            true,
            threads,
        )
        .expect("buffers are sized to the layer");
    }
}

struct Layer {
    /// Query, key and value in one `[3h, h]` product.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// A BERT encoder's weights, ready to run on the CPU.
pub(crate) struct CpuBert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    eps: f32,
    activation: Activation,
}

impl CpuBert {
    /// Reads the weights of `config`'s BERT from `vb` (names with or without a `bert.` or
    /// model-type prefix, as candle-transformers accepts them).
    pub(crate) fn load(vb: &VarBuilder, config: &Config) -> candle_core::Result<Self> {
        let h = config.hidden_size;
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            );
        }
        let vb = [None, Some("bert".to_string()), config.model_type.clone()]
            .into_iter()
            .map(|p| p.map_or_else(|| vb.clone(), |p| vb.pp(p)))
            .find(|v| v.contains_tensor("embeddings.word_embeddings.weight"))
            .unwrap_or_else(|| vb.clone());
        let get = |shape: &[usize], name: &str| -> candle_core::Result<Vec<f32>> {
            vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
        };
        let norm = |name: &str| -> candle_core::Result<Norm> {
            Ok(Norm {
                gamma: get(&[h], &format!("{name}.weight"))?,
                beta: get(&[h], &format!("{name}.bias"))?,
            })
        };
        let dense = |name: &str, n_in: usize, n_out: usize| -> candle_core::Result<Dense> {
            Ok(Dense {
                w: get(&[n_out, n_in], &format!("{name}.weight"))?,
                b: get(&[n_out], &format!("{name}.bias"))?,
                n_in,
            })
        };
        let inter = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| -> candle_core::Result<Layer> {
                let at = |s: &str| format!("encoder.layer.{i}.{s}");
                let [q, k, v] = ["query", "key", "value"]
                    .map(|n| dense(&at(&format!("attention.self.{n}")), h, h));
                let (q, k, v) = (q?, k?, v?);
                Ok(Layer {
                    qkv: Dense {
                        w: [q.w, k.w, v.w].concat(),
                        b: [q.b, k.b, v.b].concat(),
                        n_in: h,
                    },
                    attention_out: dense(&at("attention.output.dense"), h, h)?,
                    attention_norm: norm(&at("attention.output.LayerNorm"))?,
                    up: dense(&at("intermediate.dense"), h, inter)?,
                    down: dense(&at("output.dense"), inter, h)?,
                    out_norm: norm(&at("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word: get(&[config.vocab_size, h], "embeddings.word_embeddings.weight")?,
            position: get(
                &[config.max_position_embeddings, h],
                "embeddings.position_embeddings.weight",
            )?,
            token_type: get(
                &[config.type_vocab_size, h],
                "embeddings.token_type_embeddings.weight",
            )?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            activation: match config.hidden_act {
                HiddenAct::Gelu => Activation::Gelu,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
        })
    }

    /// The last layer's token states of every text, one `hidden`-wide row per token, the
    /// texts one after another.
    pub(crate) fn forward(&self, texts: &[Tokens]) -> Result<Vec<f32>, EmbedError> {
        let h = self.hidden;
        let threads = rayon::current_num_threads();
        let mut x = self.embed_tokens(texts)?;
        let (mut qkv, mut ctx, mut y, mut up) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for layer in &self.layers {
            layer.qkv.forward(&x, &mut qkv, threads);
            ctx.resize(x.len(), 0.0);
            self.attend(texts, &qkv, &mut ctx);
            layer.attention_out.forward(&ctx, &mut y, threads);
            let n = &layer.attention_norm;
            ops::add_layer_norm(&mut y, &x, &n.gamma, &n.beta, self.eps);
            std::mem::swap(&mut x, &mut y);
            layer.up.forward(&x, &mut up, threads);
            self.activation.apply(&mut up);
            layer.down.forward(&up, &mut y, threads);
            let n = &layer.out_norm;
            ops::add_layer_norm(&mut y, &x, &n.gamma, &n.beta, self.eps);
            std::mem::swap(&mut x, &mut y);
        }
        debug_assert_eq!(
            x.len(),
            texts.iter().map(|t| t.ids.len()).sum::<usize>() * h
        );
        Ok(x)
    }

    /// Word, position and token-type embeddings summed and normalised.
    fn embed_tokens(&self, texts: &[Tokens]) -> Result<Vec<f32>, EmbedError> {
        let h = self.hidden;
        let total: usize = texts.iter().map(|t| t.ids.len()).sum();
        let mut x = Vec::with_capacity(total * h);
        fn row<'a>(
            table: &'a [f32],
            h: usize,
            i: u32,
            what: &str,
        ) -> Result<&'a [f32], EmbedError> {
            table
                .get(i as usize * h..(i as usize + 1) * h)
                .ok_or_else(|| {
                    EmbedError::Tokenizer(format!(
                        "{what} {i} is past the model's {} embeddings",
                        table.len() / h
                    ))
                })
        }
        for t in texts {
            for (p, (&id, &ty)) in t.ids.iter().zip(t.types).enumerate() {
                let (w, s, q) = (
                    row(&self.word, h, id, "token id")?,
                    row(&self.token_type, h, ty, "token type")?,
                    row(&self.position, h, p as u32, "position")?,
                );
                x.extend(w.iter().zip(s).zip(q).map(|((a, b), c)| a + b + c));
            }
        }
        let n = &self.embedding_norm;
        ops::layer_norm(&mut x, &n.gamma, &n.beta, self.eps);
        Ok(x)
    }

    /// Multi-head self-attention of each text over its own tokens: `ctx` (tokens × h) from
    /// the fused `qkv` (tokens × 3h). Texts run in parallel, each product on one thread.
    fn attend(&self, texts: &[Tokens], qkv: &[f32], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut parts = Vec::with_capacity(texts.len());
        let (mut rest, mut start) = (ctx, 0);
        for t in texts {
            let n = t.ids.len();
            let (mine, tail) = rest.split_at_mut(n * h);
            parts.push((mine, &qkv[start * 3 * h..(start + n) * 3 * h], n));
            (rest, start) = (tail, start + n);
        }
        parts.into_par_iter().for_each(|(out, qkv, n)| {
            let mut scores = vec![0f32; n * n];
            for head in 0..self.heads {
                let (q, k, v) = (
                    &qkv[head * d..],
                    &qkv[h + head * d..],
                    &qkv[2 * h + head * d..],
                );
                gemm(
                    (n, n, d),
                    Operand::rows(q, 3 * h),
                    Operand::transposed(k, 3 * h),
                    (&mut scores, n),
                    false,
                    1,
                )
                .expect("scores fit");
                ops::softmax_rows(&mut scores, n, scale);
                gemm(
                    (n, d, n),
                    Operand::rows(&scores, n),
                    Operand::rows(v, 3 * h),
                    (&mut out[head * d..], h),
                    false,
                    1,
                )
                .expect("context fits");
            }
        });
    }
}
