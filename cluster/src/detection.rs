//! Metrics that judge an anomaly score against known anomalies: the area under the ROC curve,
//! average precision, and recall and false-alarm rate at a threshold.
//!
//! A score is "higher is more anomalous". Ties are handled the way scikit-learn's
//! `roc_auc_score` and `average_precision_score` handle them (tied scores form one step of the
//! curve), so figures from here and from a Python bench script agree.

/// Area under the ROC curve: the chance that a random anomaly scores above a random normal
/// sample, ties counting one half. `None` when either class is empty or a score is NaN.
pub fn auroc(scores: &[f32], anomalous: &[bool]) -> Option<f64> {
    let order = ranked(scores, anomalous)?;
    let positives = anomalous.iter().filter(|&&a| a).count();
    let negatives = anomalous.len() - positives;
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += mid_rank * order[i..j].iter().filter(|&&s| anomalous[s]).count() as f64;
        i = j;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives as f64 * negatives as f64))
}

/// Average precision: precision at each threshold weighted by the recall it adds, thresholds
/// taken at every distinct score from the highest down. `None` as for [`auroc`].
pub fn average_precision(scores: &[f32], anomalous: &[bool]) -> Option<f64> {
    let mut order = ranked(scores, anomalous)?;
    order.reverse();
    let positives = anomalous.iter().filter(|&&a| a).count() as f64;
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        tp += order[i..j].iter().filter(|&&s| anomalous[s]).count();
        seen += j - i;
        let recall = tp as f64 / positives;
        ap += (recall - last_recall) * tp as f64 / seen as f64;
        last_recall = recall;
        i = j;
    }
    Some(ap)
}

/// What a yes/no flag caught: anomalies flagged and normal samples flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlagCounts {
    /// Anomalies in the data.
    pub anomalies: usize,
    /// Anomalies flagged.
    pub caught: usize,
    /// Normal samples in the data.
    pub normal: usize,
    /// Normal samples flagged.
    pub false_alarms: usize,
}

impl FlagCounts {
    /// Counts `flagged` against `anomalous` (equal lengths; extra entries of either are ignored).
    pub fn new(flagged: &[bool], anomalous: &[bool]) -> Self {
        let mut c = Self::default();
        for (&f, &a) in flagged.iter().zip(anomalous) {
            if a {
                c.anomalies += 1;
                c.caught += usize::from(f);
            } else {
                c.normal += 1;
                c.false_alarms += usize::from(f);
            }
        }
        c
    }

    /// Fraction of anomalies flagged (0 when there are none).
    pub fn recall(&self) -> f64 {
        self.caught as f64 / self.anomalies.max(1) as f64
    }

    /// Fraction of normal samples flagged (0 when there are none).
    pub fn false_alarm_rate(&self) -> f64 {
        self.false_alarms as f64 / self.normal.max(1) as f64
    }
}

/// Indices sorted by ascending score, after checking the inputs make a curve.
fn ranked(scores: &[f32], anomalous: &[bool]) -> Option<Vec<usize>> {
    let positives = anomalous.iter().filter(|&&a| a).count();
    if scores.len() != anomalous.len()
        || positives == 0
        || positives == anomalous.len()
        || scores.iter().any(|s| s.is_nan())
    {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One anomaly ties with two normal samples at 0.4. By scikit-learn's definitions: of the
    /// nine anomaly-normal pairs, eight are won and two tie (AUROC = 8/9); the thresholds 0.9,
    /// 0.8 and 0.4 (one step for the three tied scores) give AP = 1/3 + 1/3 + 1/3 * 3/5.
    #[test]
    fn ties_count_as_scikit_learn_counts_them() {
        let scores = [0.1, 0.4, 0.4, 0.8, 0.4, 0.9];
        let truth = [false, false, true, true, false, true];
        assert!((auroc(&scores, &truth).unwrap() - 8.0 / 9.0).abs() < 1e-12);
        let ap = average_precision(&scores, &truth).unwrap();
        assert!((ap - (2.0 / 3.0 + 0.2)).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn perfect_and_reversed_scores() {
        let truth = [false, false, true, true];
        assert_eq!(auroc(&[0.0, 1.0, 2.0, 3.0], &truth), Some(1.0));
        assert_eq!(auroc(&[3.0, 2.0, 1.0, 0.0], &truth), Some(0.0));
        assert_eq!(auroc(&[1.0; 4], &truth), Some(0.5));
        assert_eq!(average_precision(&[0.0, 1.0, 2.0, 3.0], &truth), Some(1.0));
    }

    #[test]
    fn undefined_curves_are_none() {
        assert_eq!(auroc(&[1.0, 2.0], &[false, false]), None);
        assert_eq!(auroc(&[1.0, 2.0], &[true, true]), None);
        assert_eq!(auroc(&[1.0, f32::NAN], &[true, false]), None);
        assert_eq!(average_precision(&[1.0], &[true, false]), None);
    }

    #[test]
    fn flag_counts_split_recall_and_false_alarms() {
        let c = FlagCounts::new(&[true, false, true, true], &[true, true, false, false]);
        assert_eq!(
            (c.caught, c.anomalies, c.false_alarms, c.normal),
            (1, 2, 2, 2)
        );
        assert_eq!((c.recall(), c.false_alarm_rate()), (0.5, 1.0));
    }
}
