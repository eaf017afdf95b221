//! What the fleet reports: each device's cumulative counters per model, and their sums.
//!
//! Devices report counters since they loaded a model, so a report replaces the device's
//! previous one for that model instead of adding to it: a report that is sent twice (a retry
//! after a lost answer) is not counted twice. The table is kept in `fleet.json` in the store,
//! rewritten atomically on every report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dekm_edge::fs::write_atomic;
use serde::{Deserialize, Serialize};

const FILE: &str = "fleet.json";
/// Longest accepted device id.
pub const MAX_DEVICE_ID: usize = 128;

/// Why a report was refused or could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The report does not fit the model or is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// `fleet.json` cannot be read or written.
    #[error("{path}: {reason}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
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

/// `(model id, device id)` → last report.
type Table = BTreeMap<String, BTreeMap<String, DeviceReport>>;

/// The fleet table of one store.
#[derive(Debug)]
pub struct FleetStats {
    path: PathBuf,
    table: Mutex<Table>,
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
    /// Opens the table in store directory `dir` (empty when the file does not exist).
    pub fn open(dir: &Path) -> Result<Self, FleetError> {
        let path = dir.join(FILE);
        let table = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| FleetError::Storage {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::new(),
            Err(e) => {
                return Err(FleetError::Storage {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self {
            path,
            table: Mutex::new(table),
        })
    }

    /// Records `device`'s report for a model with `k` clusters.
    pub fn report(
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
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = table.clone();
        next.entry(model.to_string())
            .or_default()
            .insert(device.to_string(), report);
        let json = serde_json::to_vec(&next).map_err(|e| FleetError::Storage {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path, &json).map_err(|e| FleetError::Storage {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        *table = next;
        Ok(())
    }

    /// Every device's last report, for one model or all (`(model, device, report)`).
    pub fn devices(&self, model: Option<&str>) -> Vec<(String, String, DeviceReport)> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .iter()
            .filter(|(m, _)| model.is_none_or(|want| want == m.as_str()))
            .flat_map(|(m, devices)| {
                devices
                    .iter()
                    .map(move |(d, r)| (m.clone(), d.clone(), r.clone()))
            })
            .collect()
    }

    /// Per-model sums over the devices.
    pub fn totals(&self, model: Option<&str>) -> BTreeMap<String, ModelTotals> {
        let mut out: BTreeMap<String, ModelTotals> = BTreeMap::new();
        for (m, _, r) in self.devices(model) {
            let t = out.entry(m).or_default();
            t.devices += 1;
            t.counts.resize(r.counts.len(), 0);
            t.outliers.resize(r.outliers.len(), 0);
            for (s, c) in t.counts.iter_mut().zip(&r.counts) {
                *s += c;
            }
            for (s, c) in t.outliers.iter_mut().zip(&r.outliers) {
                *s += c;
            }
            t.rejected += r.rejected;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(counts: &[u64], outliers: &[u64]) -> DeviceReport {
        DeviceReport {
            counts: counts.to_vec(),
            outliers: outliers.to_vec(),
            rejected: 1,
            reported_unix: 0,
        }
    }

    #[test]
    fn reports_replace_per_device_sum_per_model_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let f = FleetStats::open(dir.path()).unwrap();
        f.report("a", "m1", 2, rep(&[1, 2], &[0, 1])).unwrap();
        // A retried or newer cumulative report replaces, never adds.
        f.report("a", "m1", 2, rep(&[3, 2], &[0, 1])).unwrap();
        f.report("b", "m1", 2, rep(&[10, 0], &[1, 0])).unwrap();
        f.report("b", "m2", 3, rep(&[1, 1, 1], &[0, 0, 0])).unwrap();
        let t = &f.totals(Some("m1"))["m1"];
        assert_eq!(
            (
                t.devices,
                t.counts.as_slice(),
                t.outliers.as_slice(),
                t.rejected
            ),
            (2, &[13, 2][..], &[1, 1][..], 2)
        );
        assert_eq!(f.devices(None).len(), 3);
        let reopened = FleetStats::open(dir.path()).unwrap();
        assert_eq!(reopened.totals(None), f.totals(None));
    }

    #[test]
    fn inconsistent_reports_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = FleetStats::open(dir.path()).unwrap();
        for (device, r, want) in [
            ("a", rep(&[1], &[0]), "has 2 clusters"),
            ("a", rep(&[1, 1], &[2, 0]), "cluster 0: 2 outliers among 1"),
            ("", rep(&[1, 1], &[0, 0]), "device id"),
            ("a b", rep(&[1, 1], &[0, 0]), "printable"),
        ] {
            let err = f.report(device, "m", 2, r).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(f.devices(None).is_empty());
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(matches!(
            FleetStats::open(dir.path()),
            Err(FleetError::Storage { .. })
        ));
    }
}
