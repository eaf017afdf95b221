//! Documents as samples: how a `text:PATH` source is read and embedded, and the texts a data
//! set of sentence embeddings keeps beside its vectors.

use std::path::Path;
use std::sync::Arc;

use dekm_embed::Embedder;
use dekm_shared::EmbedderRef;

use super::{DataError, DataSource, Dataset, LoadOptions, SampleShape};

/// How documents become vectors.
#[derive(Clone)]
pub struct TextOptions {
    /// The text column of a CSV file or field of a JSON Lines file.
    pub column: Option<String>,
    /// The sentence-embedding model.
    pub embedder: Arc<Embedder>,
    /// Texts per embedding batch.
    pub batch: usize,
    /// Called with the number of texts embedded after each batch.
    pub progress: Option<Arc<dyn Fn(usize, usize) + Send + Sync>>,
}

impl std::fmt::Debug for TextOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextOptions")
            .field("column", &self.column)
            .field("embedder", &self.embedder.id())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// The documents behind a data set of sentence embeddings.
#[derive(Debug, Clone)]
pub struct TextCorpus {
    /// The documents, one per sample.
    pub texts: Vec<String>,
    /// The embedder whose vectors the samples are; a model trained on them records it.
    pub embedder: EmbedderRef,
    /// How many documents were longer than the embedder's token limit and truncated.
    pub truncated: usize,
}

impl TextCorpus {
    pub(super) fn select(&self, indices: &[usize]) -> Self {
        Self {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            embedder: self.embedder.clone(),
            truncated: self.truncated,
        }
    }
}

/// What to say when documents come without an embedder to turn them into vectors.
pub fn needs_embedder(what: impl std::fmt::Display) -> String {
    format!(
        "{what} needs --embedder DIR: a sentence-transformers model folder \
         (scripts/fetch-minilm.sh unpacks all-MiniLM-L6-v2)"
    )
}

/// Reads and embeds the documents of `path`.
pub(super) fn load_text(
    source: &DataSource,
    path: &Path,
    opts: &LoadOptions,
) -> Result<Dataset, DataError> {
    let t = opts
        .text
        .as_ref()
        .ok_or_else(|| DataError::Unsupported(needs_embedder(source)))?;
    let mut read =
        dekm_data::text::read_texts(path, t.column.as_deref(), opts.label_column.as_ref())?;
    if let Some(n) = opts.limit {
        read.texts.truncate(n);
        if let Some(l) = &mut read.labels {
            l.truncate(n);
        }
    }
    embed_texts(source.to_string(), read, t)
}

/// Embeds documents already read (a file's, or a request's) into a data set named `name`.
pub fn embed_texts(
    name: String,
    read: dekm_data::text::Texts,
    t: &TextOptions,
) -> Result<Dataset, DataError> {
    let total = read.texts.len();
    let e = t
        .embedder
        .embed(&read.texts, t.batch, &mut |done| {
            if let Some(p) = &t.progress {
                p(done, total);
            }
        })
        .map_err(|e| DataError::Unsupported(format!("{name}: embedding failed: {e}")))?;
    if !e.truncated.is_empty() {
        tracing::warn!(
            texts = e.truncated.len(),
            first = e.truncated[0] + 1,
            tokens = t.embedder.folder().max_tokens,
            "texts longer than the embedder's token limit were truncated to it, as \
             sentence-transformers does"
        );
    }
    Ok(Dataset {
        name,
        shape: SampleShape::Vector(e.dim),
        xs: e.xs,
        labels: read.labels,
        anomalies: None,
        label_names: read.label_names,
        stream: None,
        text: Some(TextCorpus {
            texts: read.texts,
            embedder: t.embedder.id().clone(),
            truncated: e.truncated.len(),
        }),
    })
}
