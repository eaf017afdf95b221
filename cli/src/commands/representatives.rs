//! The texts that stand for each cluster, printed after `dekm train` and `dekm cluster` on
//! documents: the few nearest its centre in the embedding space, what a person reads to name
//! the topics.

use dekm_trainer::data::{Dataset, TextCorpus};
use dekm_trainer::representatives::nearest_to_centres;

/// Prints, for each of the `k` clusters of `labels` (a label of `k` or more is noise, left
/// out), the three texts nearest its centre.
pub(crate) fn print(ds: &Dataset, text: &TextCorpus, labels: &[u32], k: usize) {
    let d = ds.shape.len();
    for (c, members) in nearest_to_centres(&ds.xs, d, labels, k, 3)
        .iter()
        .enumerate()
    {
        if members.is_empty() {
            continue;
        }
        println!("cluster {c}, texts nearest its centre:");
        for &i in members {
            let t = &text.texts[i];
            let short: String = t.chars().take(100).collect();
            let more = if short.len() < t.len() { "..." } else { "" };
            println!("  {short}{more}");
        }
    }
    if text.truncated > 0 {
        println!(
            "{} of {} texts were longer than {}'s token limit and embedded from their beginning",
            text.truncated,
            text.texts.len(),
            text.embedder.name
        );
    }
}
