//! Backend selection at run time. Burn 0.22 has no backend type parameter: a [`Device`] value
//! picks the backend, and cargo features decide which backends are compiled in.

pub use burn::tensor::Device;

/// Which compiled-in backend a [`RuntimeDevice`] runs on. The model code asks this for the few
/// places where backends differ (the flex attention kernel handles GQA natively; the cubecl
/// kernels need K/V heads repeated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Flex,
    Cuda,
    Wgpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "cpu (burn-flex)",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

#[derive(Clone)]
pub struct RuntimeDevice {
    pub device: Device,
    pub kind: BackendKind,
}

impl std::fmt::Debug for RuntimeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RuntimeDevice({})", self.kind.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "device `{0}` is not available in this build; compiled backends: {1}. Rebuild with \
     `--features cuda` or `--features wgpu` for GPUs"
)]
pub struct DeviceError(String, String);

impl RuntimeDevice {
    /// The CPU device (burn-flex, f32).
    #[cfg(feature = "flex")]
    pub fn cpu() -> Self {
        RuntimeDevice {
            device: Device::flex(),
            kind: BackendKind::Flex,
        }
    }

    /// Names accepted by [`RuntimeDevice::parse`] in this build.
    pub fn compiled() -> Vec<&'static str> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push("cpu");
        }
        if cfg!(feature = "cuda") {
            v.push("cuda");
        }
        if cfg!(feature = "wgpu") {
            v.push("wgpu");
        }
        v
    }

    /// `cpu`, `cuda`, `cuda:N`, `wgpu`, or `auto` (the first GPU backend compiled in, else CPU).
    pub fn parse(name: &str) -> Result<Self, DeviceError> {
        let unavailable = || DeviceError(name.to_string(), Self::compiled().join(", "));
        match name {
            "auto" => {
                #[cfg(feature = "cuda")]
                return Self::parse("cuda");
                #[cfg(all(not(feature = "cuda"), feature = "wgpu"))]
                return Self::parse("wgpu");
                #[allow(unreachable_code)]
                Self::parse("cpu")
            }
            "cpu" => {
                #[cfg(feature = "flex")]
                return Ok(Self::cpu());
                #[allow(unreachable_code)]
                Err(unavailable())
            }
            n if n == "cuda" || n.starts_with("cuda:") => {
                #[cfg(feature = "cuda")]
                {
                    let idx: usize = n
                        .strip_prefix("cuda:")
                        .map(|s| s.parse().map_err(|_| unavailable()))
                        .transpose()?
                        .unwrap_or(0);
                    return Ok(RuntimeDevice {
                        device: Device::cuda(idx),
                        kind: BackendKind::Cuda,
                    });
                }
                #[allow(unreachable_code)]
                Err(unavailable())
            }
            "wgpu" => {
                #[cfg(feature = "wgpu")]
                return Ok(RuntimeDevice {
                    device: Device::wgpu(burn::tensor::DeviceKind::default()),
                    kind: BackendKind::Wgpu,
                });
                #[allow(unreachable_code)]
                Err(unavailable())
            }
            _ => Err(unavailable()),
        }
    }

    pub fn sync(&self) {
        let _ = self.device.sync();
    }
}
