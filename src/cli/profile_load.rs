use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::press::HeadProfile;
pub struct Effective {
    pub srh_heads: usize,
    pub window: usize,
    pub kernel: usize,
    pub mix: f64,
    pub min_budget: usize,
    pub max_budget_factor: f64,
}
pub fn load_head_profile(
    _lm: &LoadedModel,
    _arg: &str,
) -> anyhow::Result<(HeadProfile, Effective)> {
    anyhow::bail!("profiles: not wired yet")
}
