//! Where a run computes: the CPU, or a CUDA GPU in a binary built with the `cuda` feature.
//!
//! `auto` picks the first GPU when the binary has CUDA and one answers, else the CPU, so the
//! same command runs on a laptop and on a GPU host. Asking for a GPU that cannot be had is an
//! error naming why (no CUDA in this build, or the driver's answer), never a silent fallback.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The device a command asks for (`--device auto|cpu|cuda[:N]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA GPU when this binary has CUDA and one answers, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number N (0 for `cuda`).
    Cuda(usize),
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// Not `auto`, `cpu`, `cuda` or `cuda:N`.
    #[error("device {0:?}: expected auto, cpu, cuda or cuda:N (N a GPU number)")]
    Unknown(String),
    /// A GPU was asked for, but this binary has no CUDA.
    #[error(
        "device {0}: this dekm was built without CUDA; build it with scripts/build-cuda.sh \
         (cargo's `cuda` feature) or choose the CPU (--device cpu)"
    )]
    NotBuilt(DeviceChoice),
    /// The driver did not give the GPU.
    #[error("device {choice}: no CUDA GPU answers ({reason})")]
    Unavailable {
        /// What was asked for.
        choice: DeviceChoice,
        /// The driver's or candle's answer.
        reason: String,
    },
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether this binary was built with CUDA (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// The device to compute on, and the choice it stands for (`auto` resolved): `cpu` or
    /// `cuda:N`.
    pub fn open(self) -> Result<(candle_core::Device, DeviceChoice), DeviceError> {
        match self {
            Self::Cpu => Ok((candle_core::Device::Cpu, Self::Cpu)),
            Self::Cuda(_) if !CUDA_BUILT => Err(DeviceError::NotBuilt(self)),
            Self::Cuda(n) => candle_core::Device::new_cuda(n)
                .map(|d| (d, self))
                .map_err(|e| DeviceError::Unavailable {
                    choice: self,
                    // candle appends a backtrace to its driver errors; the first line is the
                    // driver's answer.
                    reason: e.to_string().lines().next().unwrap_or_default().to_string(),
                }),
            Self::Auto if !CUDA_BUILT => Ok((candle_core::Device::Cpu, Self::Cpu)),
            Self::Auto => match Self::Cuda(0).open() {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::info!(reason = %e, "no GPU: computing on the CPU");
                    Ok((candle_core::Device::Cpu, Self::Cpu))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda:0", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>(), Ok(d));
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert_eq!(err, DeviceError::Unknown(bad.into()));
            assert!(
                err.to_string()
                    .contains("expected auto, cpu, cuda or cuda:N")
            );
        }
        let json = serde_json::to_string(&DeviceChoice::Cuda(1)).unwrap();
        assert_eq!(json, "\"cuda:1\"");
        assert_eq!(
            serde_json::from_str::<DeviceChoice>(&json).unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert!(serde_json::from_str::<DeviceChoice>("\"tpu\"").is_err());
    }

    #[test]
    fn the_cpu_always_opens_and_auto_resolves_to_a_device() {
        let (dev, used) = DeviceChoice::Cpu.open().unwrap();
        assert!(dev.is_cpu());
        assert_eq!(used, DeviceChoice::Cpu);
        let (dev, used) = DeviceChoice::Auto.open().unwrap();
        assert_ne!(used, DeviceChoice::Auto);
        assert_eq!(dev.is_cuda(), matches!(used, DeviceChoice::Cuda(_)));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_refuses_cuda_and_says_how_to_get_it() {
        for choice in [DeviceChoice::Cuda(0), DeviceChoice::Cuda(2)] {
            let err = choice.open().unwrap_err();
            assert_eq!(err, DeviceError::NotBuilt(choice));
            let text = err.to_string();
            assert!(text.contains("built without CUDA"), "{text}");
            assert!(text.contains("scripts/build-cuda.sh"), "{text}");
            assert!(text.contains("--device cpu"), "{text}");
        }
        assert_eq!(DeviceChoice::Auto.open().unwrap().1, DeviceChoice::Cpu);
    }
}
