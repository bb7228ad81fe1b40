pub struct AttnParams {
    pub scale: f32,
    pub softcap: Option<f32>,
}
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    params: &AttnParams,
    visible: &dyn Fn(usize) -> (usize, usize),
    out: &mut [f32],
) {
    for r in 0..q.len() / d {
        let (lo, hi) = visible(r);
        let o = &mut out[r * d..(r + 1) * d];
        o.fill(0.0);
        if lo >= hi {
            continue;
        }
        let qr = &q[r * d..(r + 1) * d];
        let mut logits: Vec<f32> = (lo..hi)
            .map(|t| {
                let mut l = qr
                    .iter()
                    .zip(&k[t * d..(t + 1) * d])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    * params.scale;
                if let Some(c) = params.softcap {
                    l = c * (l / c).tanh();
                }
                l
            })
            .collect();
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for l in logits.iter_mut() {
            *l = (*l - m).exp();
            sum += *l;
        }
        for (i, t) in (lo..hi).enumerate() {
            let w = logits[i] / sum;
            for j in 0..d {
                o[j] += w * v[t * d + j];
            }
        }
    }
}
