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

/// The float type Burn computes in: the exact path and the GPU backends (the CPU kernels keep
/// their own formats, see [`WeightFormat`]). Weights, activations and the KV cache are held in
/// it; the presses' attention scores and the logits are taken in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    pub fn float(self) -> burn::tensor::FloatDType {
        match self {
            Dtype::F32 => burn::tensor::FloatDType::F32,
            Dtype::F16 => burn::tensor::FloatDType::F16,
            Dtype::Bf16 => burn::tensor::FloatDType::BF16,
        }
    }

    /// What a backend computes in unless told: bf16 on CUDA where the device supports it (the
    /// type these models are trained in; f16's range is too narrow for Gemma's activations,
    /// whose squares in RMSNorm exceed 65504), f32 elsewhere (the CPU's reference path; WGSL
    /// has no bf16).
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    fn default_for(kind: BackendKind, device: &Device) -> Dtype {
        match kind {
            BackendKind::Cuda if device.supports_dtype(Dtype::Bf16.float()) => Dtype::Bf16,
            _ => Dtype::F32,
        }
    }
}

#[derive(Clone)]
pub struct RuntimeDevice {
    pub device: Device,
    pub kind: BackendKind,
    pub precision: Precision,
    pub weights: WeightFormat,
    pub dtype: Dtype,
}

impl std::fmt::Debug for RuntimeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RuntimeDevice({}, {}, weights {}, {})",
            self.kind.name(),
            self.precision.name(),
            self.weights.name(),
            self.dtype.name()
        )
    }
}

/// Why `--device` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "device `{name}` is not available in this build; compiled backends: {compiled}. Rebuild \
         with `--features cuda` or `--features wgpu` for GPUs"
    )]
    NotCompiled { name: String, compiled: String },
    #[error("unknown device `{0}`: use cpu, cuda, cuda:N (N = 0, 1, …), wgpu or auto")]
    BadName(String),
    #[error(
        "device `{name}` is compiled in but cannot run here: {reason}. Use `--device cpu`, or \
         `--device auto` to take the first device that works"
    )]
    Unusable { name: String, reason: String },
    #[error("--dtype {asked}: {reason}")]
    Dtype { asked: &'static str, reason: String },
}

impl RuntimeDevice {
    fn new(device: Device, kind: BackendKind) -> Self {
        RuntimeDevice {
            device,
            kind,
            precision: Precision::default(),
            weights: WeightFormat::default(),
            dtype: Dtype::F32,
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
            let simd = crate::kernels::simd::active().name();
            let packed = match (crate::kernels::simd::avx512(), crate::kernels::simd::amx()) {
                (true, true) => " + avx512-vnni packed, amx-bf16 prefill",
                (true, false) => " + avx512-vnni packed",
                _ => "",
            };
            format!(
                "{}, fast kernels ({simd}{packed}, weights {})",
                self.kind.name(),
                self.weights.name()
            )
        } else {
            format!("{}, exact {}", self.kind.name(), self.dtype.name())
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

    /// `cpu`, `cuda`, `cuda:N`, `wgpu`, or `auto`: CUDA where it runs, else a wgpu adapter that is
    /// a real GPU (a software rasterizer such as lavapipe is slower than the CPU kernels), else
    /// the CPU. A GPU backend is opened and tried once here, so a missing driver is an error
    /// now (never a panic at the first tensor).
    pub fn parse(name: &str) -> Result<Self, DeviceError> {
        Self::parse_with(name, None)
    }

    /// [`RuntimeDevice::parse`] with the float type to compute in (`None`: the backend's
    /// default, see [`Dtype`]). Burn fixes a device's default float type at its first tensor,
    /// so one process computes on a device in one type.
    pub fn parse_with(name: &str, dtype: Option<Dtype>) -> Result<Self, DeviceError> {
        let not_compiled = || DeviceError::NotCompiled {
            name: name.to_string(),
            compiled: Self::compiled().join(", "),
        };
        match name {
            "auto" => {
                #[cfg(feature = "cuda")]
                if let Ok(d) = Self::parse_with("cuda", dtype) {
                    return Ok(d);
                }
                #[cfg(feature = "wgpu")]
                if let Ok(d) = Self::parse_with("wgpu", dtype)
                    && d.is_hardware()
                {
                    return Ok(d);
                }
                Self::parse_with("cpu", dtype)
            }
            "cpu" => {
                #[cfg(feature = "flex")]
                return Self::cpu().with_dtype(dtype.unwrap_or(Dtype::F32));
                #[allow(unreachable_code)]
                Err(not_compiled())
            }
            n if n == "cuda" || n.starts_with("cuda:") => {
                let idx: usize = match n.strip_prefix("cuda:") {
                    Some(i) => i.parse().map_err(|_| DeviceError::BadName(n.to_string()))?,
                    None => 0,
                };
                #[cfg(feature = "cuda")]
                return RuntimeDevice::new(Device::cuda(idx), BackendKind::Cuda).probed(n, dtype);
                #[allow(unreachable_code)]
                {
                    let _ = (idx, dtype);
                    Err(not_compiled())
                }
            }
            "wgpu" => {
                #[cfg(feature = "wgpu")]
                return RuntimeDevice::new(
                    Device::wgpu(burn::tensor::DeviceKind::default()),
                    BackendKind::Wgpu,
                )
                .probed(name, dtype);
                #[allow(unreachable_code)]
                Err(not_compiled())
            }
            _ => Err(DeviceError::BadName(name.to_string())),
        }
    }

    /// Sets the device's default float type (before its first tensor; the same type again is
    /// fine, another one is refused: Burn keeps one per device and process).
    fn with_dtype(mut self, dtype: Dtype) -> Result<Self, DeviceError> {
        let refuse = |reason: String| DeviceError::Dtype {
            asked: dtype.name(),
            reason,
        };
        if !self.device.supports_dtype(dtype.float()) {
            return Err(refuse(format!(
                "{} does not compute in {}; use --dtype f32",
                self.kind.name(),
                dtype.name()
            )));
        }
        let current = self.device.settings().float_dtype;
        if current != dtype.float() && self.device.configure(dtype.float()).is_err() {
            return Err(refuse(format!(
                "this process already computes in {current:?} on {}",
                self.kind.name()
            )));
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// Runs one tiny upload and read-back on the device. cubecl reports a missing driver or
    /// adapter by panicking on its device thread; that panic is caught (its message kept, not
    /// printed) and returned as [`DeviceError::Unusable`].
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    fn probed(self, name: &str, dtype: Option<Dtype>) -> Result<Self, DeviceError> {
        use burn::tensor::{Tensor, TensorData};
        let tried = quiet_panics(move || {
            let dtype = dtype.unwrap_or_else(|| Dtype::default_for(self.kind, &self.device));
            let dev = self.with_dtype(dtype)?;
            Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &dev.device)
                .try_into_data()
                .map_err(|e| DeviceError::Unusable {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?;
            Ok(dev)
        });
        tried.unwrap_or_else(|reason| {
            Err(DeviceError::Unusable {
                name: name.to_string(),
                reason,
            })
        })
    }

    /// Whether the device is a physical GPU (not the CPU, not a software rasterizer).
    pub fn is_hardware(&self) -> bool {
        match self.kind {
            BackendKind::Flex => false,
            BackendKind::Cuda => true,
            #[cfg(any(feature = "cuda", feature = "wgpu"))]
            BackendKind::Wgpu => self
                .device
                .identity()
                .is_some_and(|id| id.physical.is_some()),
            #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
            BackendKind::Wgpu => false,
        }
    }

    pub fn sync(&self) {
        let _ = self.device.sync();
    }
}

/// Runs `f`, turning a panic anywhere meanwhile (cubecl panics on its device thread, then on the
/// caller's side of the channel) into `Err` with the first panic's message; nothing is printed.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn quiet_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    use std::sync::{Arc, Mutex};
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let sink = first.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        sink.lock().unwrap().get_or_insert(msg);
    }));
    // Nothing `f` touches outlives a failed probe.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    let message = first.lock().unwrap().take();
    match out {
        Ok(v) => Ok(v),
        Err(_) => Err(message
            .map(|m| m.lines().next().unwrap_or_default().trim().to_string())
            .unwrap_or_else(|| "the backend panicked".into())),
    }
}
