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

/// How the CPU computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Weights stay in their stored block format (GGUF quants, bf16/f16) and the matmuls,
    /// activations and attention run on the runtime's own CPU kernels (`kernels`).
    #[default]
    Fast,
    /// Everything dequantized to f32 and computed by Burn: the reference the golden tests
    /// check, and what the GPU backends always do.
    Exact,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fast => "fast",
            Precision::Exact => "exact",
        }
    }
}

/// Load-time conversion of the weight matrices for the fast path (`--weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the file.
    #[default]
    Native,
    Q8_0,
    F16,
    F32,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Native => "native",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::F16 => "f16",
            WeightFormat::F32 => "f32",
        }
    }
}

#[derive(Clone)]
pub struct RuntimeDevice {
    pub device: Device,
    pub kind: BackendKind,
    pub precision: Precision,
    pub weights: WeightFormat,
}

impl std::fmt::Debug for RuntimeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RuntimeDevice({}, {}, weights {})",
            self.kind.name(),
            self.precision.name(),
            self.weights.name()
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "device `{0}` is not available in this build; compiled backends: {1}. Rebuild with \
     `--features cuda` or `--features wgpu` for GPUs"
)]
pub struct DeviceError(String, String);

impl RuntimeDevice {
    fn new(device: Device, kind: BackendKind) -> Self {
        RuntimeDevice {
            device,
            kind,
            precision: Precision::default(),
            weights: WeightFormat::default(),
        }
    }

    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn with_weights(mut self, weights: WeightFormat) -> Self {
        self.weights = weights;
        self
    }

    /// Whether the model runs on the runtime's CPU kernels (quantized weights in memory) rather
    /// than on Burn ops in f32.
    pub fn uses_cpu_kernels(&self) -> bool {
        self.kind == BackendKind::Flex && self.precision == Precision::Fast
    }

    /// One line for reports: backend, precision and, on the kernel path, the SIMD level.
    pub fn describe(&self) -> String {
        if self.uses_cpu_kernels() {
            format!(
                "{}, fast kernels ({}, weights {})",
                self.kind.name(),
                crate::kernels::simd::active().name(),
                self.weights.name()
            )
        } else {
            format!("{}, exact f32", self.kind.name())
        }
    }
    /// The CPU device (burn-flex, f32).
    #[cfg(feature = "flex")]
    pub fn cpu() -> Self {
        RuntimeDevice::new(Device::flex(), BackendKind::Flex)
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
                    return Ok(RuntimeDevice::new(Device::cuda(idx), BackendKind::Cuda));
                }
                #[allow(unreachable_code)]
                Err(unavailable())
            }
            "wgpu" => {
                #[cfg(feature = "wgpu")]
                return Ok(RuntimeDevice::new(
                    Device::wgpu(burn::tensor::DeviceKind::default()),
                    BackendKind::Wgpu,
                ));
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
