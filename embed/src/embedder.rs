//! The loaded model: tokenizer, BERT, pooling, normalisation.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use dekm_shared::EmbedderRef;
use sha2::{Digest, Sha256};
use tokenizers::{
    Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams, TruncationStrategy,
};

use crate::cpu::{CpuBert, Tokens};
use crate::{EmbedError, ModelFolder, Pooling};

/// A sentence-embedding model ready to run.
pub struct Embedder {
    folder: ModelFolder,
    tokenizer: Tokenizer,
    engine: Engine,
    id: EmbedderRef,
}

/// What runs the BERT: this crate's CPU forward pass on the CPU, candle-transformers' model on
/// a GPU.
enum Engine {
    Cpu(CpuBert),
    Candle { model: BertModel, device: Device },
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("id", &self.id)
            .field("dir", &self.folder.dir)
            .finish_non_exhaustive()
    }
}

/// Embeddings of a list of texts.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// Values per text.
    pub dim: usize,
    /// Row-major, one row per text in the order given.
    pub xs: Vec<f32>,
    /// Indices of the texts longer than the model's token limit, which were truncated to it
    /// (as sentence-transformers does; they are embedded from their beginning).
    pub truncated: Vec<usize>,
}

impl Embedder {
    /// Loads the model folder `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EmbedError> {
        let folder = ModelFolder::open(dir)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| EmbedError::NotAModel {
            path: tok_path.clone(),
            reason: format!("not a tokenizer file: {e}"),
        })?;
        // sentence-transformers truncates to max_seq_length whatever tokenizer.json says, and
        // pads each batch to its longest text.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: folder.max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(folder.config.pad_token_id as u32);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > folder.config.vocab_size {
            return Err(EmbedError::NotAModel {
                path: tok_path,
                reason: format!(
                    "{vocab} tokens, but config.json's vocab_size is {}: tokenizer and \
                     weights are from different models",
                    folder.config.vocab_size
                ),
            });
        }
        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|source| EmbedError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).map_err(
            |e| EmbedError::NotAModel {
                path: weights_path.clone(),
                reason: format!("not a safetensors file: {e}"),
            },
        )?;
        let engine =
            Engine::load(vb, &folder.config, device).map_err(|e| EmbedError::NotAModel {
                path: weights_path,
                reason: format!("the weights do not fit config.json's BERT: {e}"),
            })?;
        let id = EmbedderRef {
            name: folder.name.clone(),
            sha256,
            dim: folder.config.hidden_size as u32,
        };
        Ok(Self {
            folder,
            tokenizer,
            engine,
            id,
        })
    }

    /// Name, weights checksum and dimension: what a model trained on these vectors records.
    pub fn id(&self) -> &EmbedderRef {
        &self.id
    }

    /// Values per embedding.
    pub fn dim(&self) -> usize {
        self.folder.config.hidden_size
    }

    /// The folder's settings.
    pub fn folder(&self) -> &ModelFolder {
        &self.folder
    }

    /// Embeds `texts`, `batch` at a time (longest first, as sentence-transformers orders
    /// them, so a batch pads little), calling `progress` with the number done after each batch.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Embeddings, EmbedError> {
        let dim = self.dim();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().chars().count()));
        let mut xs = vec![0f32; texts.len() * dim];
        let mut truncated = Vec::new();
        let mut done = 0;
        for chunk in order.chunks(batch.max(1)) {
            let inputs: Vec<String> = chunk
                .iter()
                .map(|&i| {
                    let t = texts[i].as_ref();
                    if self.folder.lower_case {
                        t.to_lowercase()
                    } else {
                        t.to_string()
                    }
                })
                .collect();
            let encodings = self
                .tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
            for (e, &i) in encodings.iter().zip(chunk) {
                if !e.get_overflowing().is_empty() {
                    truncated.push(i);
                }
            }
            let rows = self.engine.embed(&encodings, self.folder.pooling, dim)?;
            for (row, &i) in rows.chunks_exact(dim).zip(chunk) {
                let out = &mut xs[i * dim..(i + 1) * dim];
                out.copy_from_slice(row);
                if self.folder.normalize {
                    // torch.nn.functional.normalize: x / max(|x|, 1e-12).
                    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    for v in out.iter_mut() {
                        *v /= norm;
                    }
                }
            }
            done += chunk.len();
            progress(done);
        }
        truncated.sort_unstable();
        Ok(Embeddings { dim, xs, truncated })
    }
}

impl Engine {
    /// The engine for `device`, its weights read from `vb` (on the CPU).
    fn load(vb: VarBuilder, config: &Config, device: &Device) -> candle_core::Result<Self> {
        Ok(if device.is_cpu() {
            Self::Cpu(CpuBert::load(&vb, config)?)
        } else {
            Self::Candle {
                model: BertModel::load(vb.set_device(device.clone()), config)?,
                device: device.clone(),
            }
        })
    }

    /// One pooled (not yet normalised) row per encoding, `dim` values each.
    fn embed(
        &self,
        encodings: &[Encoding],
        pooling: Pooling,
        dim: usize,
    ) -> Result<Vec<f32>, EmbedError> {
        let mut out = vec![0f32; encodings.len() * dim];
        match self {
            Self::Cpu(bert) => {
                // Padding is at the end: each text's real tokens are its first ones.
                let texts: Vec<Tokens> = encodings
                    .iter()
                    .map(|e| {
                        let n = e.get_attention_mask().iter().filter(|&&m| m != 0).count();
                        Tokens {
                            ids: &e.get_ids()[..n],
                            types: &e.get_type_ids()[..n],
                        }
                    })
                    .collect();
                let states = bert.forward(&texts)?;
                let mut at = 0;
                for (t, row) in texts.iter().zip(out.chunks_exact_mut(dim)) {
                    let n = t.ids.len() * dim;
                    pooling.pool_rows(&states[at..at + n], row);
                    at += n;
                }
            }
            Self::Candle { model, device } => {
                let (rows, width) = (encodings.len(), encodings[0].get_ids().len());
                let mut ids = Vec::with_capacity(rows * width);
                let mut types = Vec::with_capacity(rows * width);
                let mut mask = Vec::with_capacity(rows * width);
                for e in encodings {
                    ids.extend_from_slice(e.get_ids());
                    types.extend_from_slice(e.get_type_ids());
                    mask.extend_from_slice(e.get_attention_mask());
                }
                let tensor = |v: Vec<u32>| Tensor::from_vec(v, (rows, width), device);
                let (ids, types, mask) = (tensor(ids)?, tensor(types)?, tensor(mask)?);
                let states = model.forward(&ids, &types, Some(&mask))?;
                let pooled: Vec<Vec<f32>> = pooling
                    .apply(&states, &mask)?
                    .to_device(&Device::Cpu)?
                    .to_vec2()?;
                for (row, p) in out.chunks_exact_mut(dim).zip(pooled) {
                    row.copy_from_slice(&p);
                }
            }
        }
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{DIM, MAX_TOKENS, write_tiny_bert};

    fn tiny() -> (tempfile::TempDir, Embedder) {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 7).unwrap();
        let e = Embedder::load(dir.path(), &Device::Cpu).unwrap();
        (dir, e)
    }

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    const TEXTS: [&str; 4] = [
        "the puppy is cute",
        "a cat",
        "it rains today and the weather is cloudy",
        "sunny",
    ];

    #[test]
    fn unit_rows_in_input_order_whatever_the_batch() {
        let (_d, e) = tiny();
        assert_eq!((e.dim(), e.id().dim as usize), (DIM, DIM));
        let mut seen = Vec::new();
        let one = e.embed(&TEXTS, 1, &mut |n| seen.push(n)).unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        let all = e.embed(&TEXTS, 8, &mut |_| {}).unwrap();
        assert_eq!(one.xs.len(), TEXTS.len() * DIM);
        assert!(
            close(&one.xs, &all.xs, 1e-5),
            "padding changed an embedding"
        );
        for row in all.xs.chunks(DIM) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        // Different texts, different vectors: the rows are not one constant.
        assert!(!close(&all.xs[..DIM], &all.xs[DIM..2 * DIM], 1e-3));
        assert!(all.truncated.is_empty());
    }

    /// candle-transformers' BERT on the folder `dir`: the reference the CPU engine is held to.
    fn candle_bert(dir: &Path) -> BertModel {
        let folder = ModelFolder::open(dir).unwrap();
        let vb = VarBuilder::from_buffered_safetensors(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        BertModel::load(vb, &folder.config).unwrap()
    }

    #[test]
    fn mean_of_candles_token_states_then_unit_length() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 7).unwrap();
        let e = Embedder::load(dir.path(), &Device::Cpu).unwrap();
        assert!(matches!(e.engine, Engine::Cpu(_)));
        let bert = candle_bert(dir.path());
        // Embedded side by side, so every text but the longest is padded in candle's batch.
        let got = e.embed(&TEXTS, 4, &mut |_| {}).unwrap();
        for (text, row) in TEXTS.iter().zip(got.xs.chunks(DIM)) {
            let enc = e.tokenizer.encode(*text, true).unwrap();
            let n = enc.get_attention_mask().iter().filter(|&&m| m == 1).count();
            let ids = Tensor::new(&enc.get_ids()[..n], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let types = ids.zeros_like().unwrap();
            let states = bert.forward(&ids, &types, None).unwrap();
            let mean: Vec<f32> = states
                .squeeze(0)
                .unwrap()
                .mean(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
            let want: Vec<f32> = mean.iter().map(|v| v / norm).collect();
            assert!(close(row, &want, 1e-5), "{text}: {row:?} vs {want:?}");
        }
    }

    #[test]
    fn the_cpu_engine_and_candles_padded_batches_agree() {
        let words = ["the", "cat", "is", "cute", "rain", "today", "a", "dog"];
        let texts: Vec<String> = (0..40)
            .map(|i| {
                (0..1 + (i * 7) % 20)
                    .map(|j| words[(i + j * 3) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        // Every activation and pooling the CPU engine implements.
        for (act, pooling) in [
            ("gelu", "mean_tokens"),
            ("geluapproximate", "max_tokens"),
            ("relu", "cls_token"),
            ("gelu", "mean_sqrt_len_tokens"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write_tiny_bert(dir.path(), 5).unwrap();
            let edit = |file: &str, from: &str, to: &str| {
                let p = dir.path().join(file);
                let s = std::fs::read_to_string(&p).unwrap();
                assert!(s.contains(from), "{file}: {s}");
                std::fs::write(&p, s.replace(from, to)).unwrap();
            };
            edit(
                "config.json",
                "\"hidden_act\":\"gelu\"",
                &format!("\"hidden_act\":\"{act}\""),
            );
            edit(
                "1_Pooling/config.json",
                "\"pooling_mode_mean_tokens\":true",
                "\"pooling_mode_mean_tokens\":false",
            );
            edit(
                "1_Pooling/config.json",
                &format!("\"pooling_mode_{pooling}\":false"),
                &format!("\"pooling_mode_{pooling}\":true"),
            );
            let cpu = Embedder::load(dir.path(), &Device::Cpu).unwrap();
            let candle = Embedder {
                engine: Engine::Candle {
                    model: candle_bert(dir.path()),
                    device: Device::Cpu,
                },
                tokenizer: cpu.tokenizer.clone(),
                id: cpu.id.clone(),
                folder: ModelFolder::open(dir.path()).unwrap(),
            };
            let a = cpu.embed(&texts, 16, &mut |_| {}).unwrap();
            let b = candle.embed(&texts, 16, &mut |_| {}).unwrap();
            assert_eq!(a.truncated, b.truncated);
            assert!(
                !a.truncated.is_empty(),
                "some texts pass the 16-token limit"
            );
            let worst =
                a.xs.iter()
                    .zip(&b.xs)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
            assert!(worst < 2e-6, "{act} {pooling}: {worst}");
        }
    }

    #[test]
    fn long_texts_are_truncated_as_sentence_transformers_does_and_counted() {
        let (_d, e) = tiny();
        let words: Vec<&str> = std::iter::repeat_n(["the", "cat", "is", "cute"], 10)
            .flatten()
            .collect();
        let long = words.join(" ");
        let head = words[..MAX_TOKENS - 2].join(" ");
        let got = e
            .embed(&[head.as_str(), long.as_str(), "a dog"], 2, &mut |_| {})
            .unwrap();
        assert_eq!(got.truncated, [1]);
        assert!(close(&got.xs[..DIM], &got.xs[DIM..2 * DIM], 1e-5));
    }

    #[test]
    fn the_id_is_the_weights_checksum() {
        let (d, e) = tiny();
        let bytes = std::fs::read(d.path().join("model.safetensors")).unwrap();
        assert_eq!(e.id().sha256, hex(&Sha256::digest(&bytes)));
        let other = tempfile::tempdir().unwrap();
        write_tiny_bert(other.path(), 8).unwrap();
        let e2 = Embedder::load(other.path(), &Device::Cpu).unwrap();
        assert_ne!(e.id().sha256, e2.id().sha256);
        // Same seed, same folder, same checksum: tests can rely on it.
        let again = tempfile::tempdir().unwrap();
        write_tiny_bert(again.path(), 7).unwrap();
        assert_eq!(
            Embedder::load(again.path(), &Device::Cpu)
                .unwrap()
                .id()
                .sha256,
            e.id().sha256
        );
    }

    #[test]
    fn folders_that_are_not_bert_models_are_named() {
        let load = |dir: &Path| {
            Embedder::load(dir, &Device::Cpu)
                .err()
                .map(|e| e.to_string())
        };
        let missing = load(Path::new("/nonexistent/model")).unwrap();
        assert!(missing.contains("not a directory"), "{missing}");
        let edit = |file: &str, f: &dyn Fn(&Path)| {
            let d = tempfile::tempdir().unwrap();
            write_tiny_bert(d.path(), 1).unwrap();
            f(&d.path().join(file));
            (load(d.path()).expect("should fail"), d)
        };
        let (err, _d) = edit("tokenizer.json", &|p| std::fs::remove_file(p).unwrap());
        assert!(err.contains("no tokenizer.json"), "{err}");
        let (err, _d) = edit("tokenizer.json", &|p| std::fs::write(p, "{").unwrap());
        assert!(
            err.contains("tokenizer.json") && err.contains("not a tokenizer"),
            "{err}"
        );
        let (err, _d) = edit("config.json", &|p| {
            let s = std::fs::read_to_string(p).unwrap();
            std::fs::write(p, s.replace("\"bert\"", "\"mpnet\"")).unwrap()
        });
        assert!(err.contains("model_type 'mpnet'"), "{err}");
        let (err, _d) = edit("config.json", &|p| {
            let s = std::fs::read_to_string(p).unwrap();
            std::fs::write(
                p,
                s.replace("\"intermediate_size\":32", "\"intermediate_size\":48"),
            )
            .unwrap()
        });
        assert!(err.contains("do not fit"), "{err}");
        let (err, _d) = edit("model.safetensors", &|p| {
            std::fs::write(p, b"garbage").unwrap()
        });
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
