//! The files of a sentence-transformers model folder and what they say.

use std::path::{Path, PathBuf};

use candle_transformers::models::bert;
use serde::Deserialize;

use crate::{EmbedError, Pooling};

/// A sentence-transformers BERT folder, read and checked, weights not yet loaded.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its name (`all-MiniLM-L6-v2`), recorded in models trained on its vectors.
    pub name: String,
    /// The transformer's `config.json`.
    pub config: bert::Config,
    /// How token states are pooled (`1_Pooling/config.json`; mean without a module list).
    pub pooling: Pooling,
    /// Whether the module list ends in `Normalize` (unit-length embeddings).
    pub normalize: bool,
    /// Tokens per text, `[CLS]` and `[SEP]` included; longer texts are truncated
    /// (`sentence_bert_config.json`'s `max_seq_length`, else the model's position count).
    pub max_tokens: usize,
    /// Whether texts are lower-cased before tokenizing (`do_lower_case`).
    pub lower_case: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

impl ModelFolder {
    /// Reads and checks the folder's configuration files.
    pub fn open(dir: &Path) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::NotAModel {
                path: dir.to_path_buf(),
                reason: "not a directory: --embedder takes a sentence-transformers model \
                         folder (config.json, tokenizer.json, model.safetensors); \
                         scripts/fetch-minilm.sh unpacks all-MiniLM-L6-v2"
                    .into(),
            });
        }
        for needed in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(needed).is_file() {
                return Err(EmbedError::NotAModel {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "no {needed}: a sentence-transformers BERT folder holds config.json, \
                         tokenizer.json and model.safetensors"
                    ),
                });
            }
        }
        let config_path = dir.join("config.json");
        let config_text = read(&config_path)?;
        let not_bert = |reason: String| EmbedError::NotAModel {
            path: config_path.clone(),
            reason,
        };
        let kind: ModelType =
            serde_json::from_str(&config_text).map_err(|e| not_bert(e.to_string()))?;
        if let Some(t) = kind.model_type.as_deref()
            && t != "bert"
        {
            return Err(not_bert(format!(
                "model_type '{t}': only BERT models (model_type 'bert', as all-MiniLM-L6-v2) \
                 are supported"
            )));
        }
        let config: bert::Config = serde_json::from_str(&config_text)
            .map_err(|e| not_bert(format!("not a BERT configuration: {e}")))?;
        if config.hidden_size == 0
            || config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(not_bert(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let modules = optional(&dir.join("modules.json"))?
            .map(|(text, path)| {
                serde_json::from_str::<Vec<Module>>(&text).map_err(|e| EmbedError::NotAModel {
                    path,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let (pooling, normalize) = match modules {
            // A plain Hugging Face model: sentence-transformers wraps it in mean pooling.
            None => (Pooling::Mean, false),
            Some(modules) => {
                let has = |suffix: &str| modules.iter().find(|m| m.kind.ends_with(suffix));
                let pooling = match has(".Pooling") {
                    None => Pooling::Mean,
                    Some(m) => {
                        let path = dir.join(&m.path).join("config.json");
                        Pooling::from_config(&read(&path)?, &path)?
                    }
                };
                (pooling, has(".Normalize").is_some())
            }
        };
        let st = optional(&dir.join("sentence_bert_config.json"))?
            .map(|(text, path)| {
                serde_json::from_str::<SentenceBertConfig>(&text).map_err(|e| {
                    EmbedError::NotAModel {
                        path,
                        reason: e.to_string(),
                    }
                })
            })
            .transpose()?;
        let max_tokens = st
            .as_ref()
            .and_then(|s| s.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        if max_tokens < 3 {
            return Err(not_bert(format!(
                "{max_tokens} tokens per text leave no room for a word besides [CLS] and [SEP]"
            )));
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "embedder".into());
        Ok(Self {
            dir: dir.to_path_buf(),
            name,
            config,
            pooling,
            normalize,
            max_tokens,
            lower_case: st.is_some_and(|s| s.do_lower_case),
        })
    }
}

fn read(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's text and path, or `None` when it does not exist.
fn optional(path: &Path) -> Result<Option<(String, PathBuf)>, EmbedError> {
    if path.exists() {
        Ok(Some((read(path)?, path.to_path_buf())))
    } else {
        Ok(None)
    }
}
