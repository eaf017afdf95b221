//! A tiny randomly initialised BERT folder, laid out as sentence-transformers saves one, for
//! tests that must not download 90 MB: 2 layers, 16 values per token, a word-piece vocabulary
//! of a few words plus every ASCII letter (so any lower-case word tokenizes), 16 tokens per text.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};

use crate::EmbedError;

/// Tokens per text in the fixture, `[CLS]` and `[SEP]` included.
pub const MAX_TOKENS: usize = 16;

/// Values per embedding of the fixture.
pub const DIM: usize = 16;

const WORDS: [&str; 14] = [
    "the", "a", "cat", "dog", "puppy", "cute", "is", "rain", "rains", "weather", "cloudy", "sunny",
    "it", "today",
];

/// Writes the fixture into `dir` (which must exist); `seed` picks the weights.
pub fn write_tiny_bert(dir: &Path, seed: u64) -> Result<(), EmbedError> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(WORDS.iter())
        .map(|s| s.to_string())
        .collect();
    for c in 'a'..='z' {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for c in ['.', ',', '!', '?'] {
        vocab.push(c.to_string());
    }
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab_json}
    });
    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab.len(),
        "hidden_size": DIM,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 32,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute"
    });
    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    let pooling = serde_json::json!({
        "word_embedding_dimension": DIM,
        "pooling_mode_cls_token": false,
        "pooling_mode_mean_tokens": true,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false
    });
    let st = serde_json::json!({"max_seq_length": MAX_TOKENS, "do_lower_case": false});
    let write = |name: &str, v: &serde_json::Value| -> Result<(), EmbedError> {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string()).map_err(|source| EmbedError::Io { path, source })
    };
    std::fs::create_dir_all(dir.join("1_Pooling")).map_err(|source| EmbedError::Io {
        path: dir.join("1_Pooling"),
        source,
    })?;
    write("tokenizer.json", &tokenizer)?;
    write("config.json", &config)?;
    write("modules.json", &modules)?;
    write("1_Pooling/config.json", &pooling)?;
    write("sentence_bert_config.json", &st)?;
    let config: Config = serde_json::from_value(config).map_err(|e| EmbedError::NotAModel {
        path: dir.join("config.json"),
        reason: e.to_string(),
    })?;
    // Build the model over a VarMap (which creates every tensor it asks for), then overwrite
    // the values with seeded ones so the folder, and its checksum, depend on `seed` alone.
    let map = VarMap::new();
    BertModel::load(
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        &config,
    )?;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    {
        let data = map.data().lock().map_err(|_| {
            EmbedError::Tokenizer("the fixture's variable map lock was poisoned".into())
        })?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let n = var.elem_count();
            let centre = if name.ends_with("LayerNorm.weight") {
                1.0
            } else {
                0.0
            };
            let values: Vec<f32> = (0..n).map(|_| centre + 0.3 * uniform()).collect();
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
        }
    }
    map.save(dir.join("model.safetensors"))?;
    Ok(())
}
