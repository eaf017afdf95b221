//! What the fleet reports: each device's cumulative counters per model, and their sums.
//!
//! Devices report counters since they loaded a model, so a report replaces the device's
//! previous one for that model instead of adding to it: a report that is sent twice (a retry
//! after a lost answer) is not counted twice. Reports are rows of the [database](crate::db),
//! one per (model, device); reports that arrive together are committed together, and a device
//! is answered once its report is committed. Nothing is kept in memory per device, so the
//! server's memory does not grow with the fleet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{Database, DbError, ReportRow};

/// Longest accepted device id.
pub const MAX_DEVICE_ID: usize = 128;

/// Why a report was refused or could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The report does not fit the model or is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("fleet table: {0}")]
    Storage(#[from] DbError),
}

/// One device's last report for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// Samples per cluster.
    pub counts: Vec<u64>,
    /// Outliers per cluster.
    pub outliers: Vec<u64>,
    /// Samples the device could not assign.
    pub rejected: u64,
    /// When it arrived.
    pub reported_unix: u64,
}

/// Sums over the devices that run one model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelTotals {
    /// Devices that reported.
    pub devices: usize,
    /// Samples per cluster.
    pub counts: Vec<u64>,
    /// Outliers per cluster.
    pub outliers: Vec<u64>,
    /// Rejected samples.
    pub rejected: u64,
}

/// The fleet table of one store.
#[derive(Debug, Clone)]
pub struct FleetStats {
    db: Database,
}

/// Checks a device id: non-empty, at most [`MAX_DEVICE_ID`] bytes, printable ASCII.
pub fn check_device_id(id: &str) -> Result<(), FleetError> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FleetError::Invalid(format!(
            "device id {id:?} must be 1 to {MAX_DEVICE_ID} printable ASCII characters"
        )));
    }
    Ok(())
}

impl FleetStats {
    /// The fleet table in `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Records `device`'s report for a model with `k` clusters, once it is committed.
    pub async fn report(
        &self,
        device: &str,
        model: &str,
        k: usize,
        report: DeviceReport,
    ) -> Result<(), FleetError> {
        check_device_id(device)?;
        if report.counts.len() != k || report.outliers.len() != k {
            return Err(FleetError::Invalid(format!(
                "model {model} has {k} clusters but the report has {} counts and {} outlier counts",
                report.counts.len(),
                report.outliers.len()
            )));
        }
        if let Some(c) = (0..k).find(|&c| report.outliers[c] > report.counts[c]) {
            return Err(FleetError::Invalid(format!(
                "cluster {c}: {} outliers among {} samples",
                report.outliers[c], report.counts[c]
            )));
        }
        // Checked here, not by the database: a value it refuses would fail every report
        // committed with this one.
        if i64::try_from(report.rejected).is_err() {
            return Err(FleetError::Invalid(format!(
                "{} rejected samples is beyond any real count",
                report.rejected
            )));
        }
        let row = ReportRow {
            model: model.to_string(),
            device: device.to_string(),
            report,
        };
        Ok(self.db.report(row).await?)
    }

    /// Every device's last report, for one model or all (`(model, device, report)`).
    pub async fn devices(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<(String, String, DeviceReport)>, FleetError> {
        let model = model.map(str::to_string);
        let rows = self
            .db
            .call_async(move |b| b.reports(model.as_deref()))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.model, r.device, r.report))
            .collect())
    }
}

/// Per-model sums of device reports.
pub fn totals(devices: Vec<(String, String, DeviceReport)>) -> BTreeMap<String, ModelTotals> {
    let mut out: BTreeMap<String, ModelTotals> = BTreeMap::new();
    for (m, _, r) in devices {
        let t = out.entry(m).or_default();
        t.devices += 1;
        t.counts.resize(t.counts.len().max(r.counts.len()), 0);
        t.outliers.resize(t.outliers.len().max(r.outliers.len()), 0);
        for (s, c) in t.counts.iter_mut().zip(&r.counts) {
            *s = s.saturating_add(*c);
        }
        for (s, c) in t.outliers.iter_mut().zip(&r.outliers) {
            *s = s.saturating_add(*c);
        }
        t.rejected = t.rejected.saturating_add(r.rejected);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Location;

    fn rep(counts: &[u64], outliers: &[u64]) -> DeviceReport {
        DeviceReport {
            counts: counts.to_vec(),
            outliers: outliers.to_vec(),
            rejected: 1,
            reported_unix: 0,
        }
    }

    #[tokio::test]
    async fn reports_replace_per_device_sum_per_model_and_persist() {
        for location in [Location::Sqlite, Location::Json] {
            let dir = tempfile::tempdir().unwrap();
            let f = FleetStats::new(Database::open(dir.path(), &location).unwrap());
            f.report("a", "m1", 2, rep(&[1, 2], &[0, 1])).await.unwrap();
            // A retried or newer cumulative report replaces, never adds.
            f.report("a", "m1", 2, rep(&[3, 2], &[0, 1])).await.unwrap();
            f.report("b", "m1", 2, rep(&[10, 0], &[1, 0]))
                .await
                .unwrap();
            f.report("b", "m2", 3, rep(&[1, 1, 1], &[0, 0, 0]))
                .await
                .unwrap();
            let all = totals(f.devices(Some("m1")).await.unwrap());
            let t = &all["m1"];
            assert_eq!(
                (
                    t.devices,
                    t.counts.as_slice(),
                    t.outliers.as_slice(),
                    t.rejected
                ),
                (2, &[13, 2][..], &[1, 1][..], 2),
                "{location}"
            );
            assert_eq!(f.devices(None).await.unwrap().len(), 3);
            let before = totals(f.devices(None).await.unwrap());
            drop(f);
            let reopened = FleetStats::new(Database::open(dir.path(), &location).unwrap());
            assert_eq!(totals(reopened.devices(None).await.unwrap()), before);
        }
    }

    #[tokio::test]
    async fn concurrent_reports_all_land_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = FleetStats::new(Database::open(dir.path(), &Location::Sqlite).unwrap());
        let sends = (0..500).map(|d| {
            let f = f.clone();
            tokio::spawn(
                async move { f.report(&format!("dev-{d}"), "m", 1, rep(&[d], &[0])).await },
            )
        });
        for s in sends.collect::<Vec<_>>() {
            s.await.unwrap().unwrap();
        }
        let t = totals(f.devices(None).await.unwrap());
        assert_eq!((t["m"].devices, t["m"].counts[0]), (500, (0..500).sum()));
    }

    #[tokio::test]
    async fn inconsistent_reports_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = FleetStats::new(Database::open(dir.path(), &Location::Sqlite).unwrap());
        let mut huge = rep(&[1, 1], &[0, 0]);
        huge.rejected = u64::MAX;
        for (device, r, want) in [
            ("a", rep(&[1], &[0]), "has 2 clusters"),
            ("a", rep(&[1, 1], &[2, 0]), "cluster 0: 2 outliers among 1"),
            ("", rep(&[1, 1], &[0, 0]), "device id"),
            ("a b", rep(&[1, 1], &[0, 0]), "printable"),
            ("a", huge, "18446744073709551615 rejected"),
        ] {
            let err = f.report(device, "m", 2, r).await.unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(f.devices(None).await.unwrap().is_empty());
    }
}
