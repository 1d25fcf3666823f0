//! Gradient descent for t-SNE / SNE, and placing new points against a fixed
//! embedding.
//!
//! Gradient (units of ∂C/∂y / 4): g_i = α_ex·A_i − R_i with the attractive term
//!   A_i = Σ_j p_ij b_ij (y_i − y_j),  b = 1/(1 + d²/dof) (t-SNE) or 1 (Gaussian kernels),
//! over the sparse symmetric P, and R_i from [`super::bh`], [`super::fft`] or [`super::exact`].
//!
//! Update per coordinate (delta-bar-delta gains, as in FIt-SNE / openTSNE; sign(0) = 0):
//!   gain ← gain + 0.2 if sign(g) ≠ sign(u) else gain·0.8 + 0.01;
//!   u ← μ·u − η·gain·g;  u_i ← u_i·min(1, s_max/‖u_i‖);  y ← y + u.
//!
//! KL(P‖Q) = Σ p ln p − Σ p ln w + ln Z over P's support (exact given Z);
//! during exaggeration it is still computed with the true P.

use super::affinity::Csr;
use super::bh::bh_repulsion;
use super::exact::{exact_repulsion, fsum};
use super::locality::{self as loc, Locality};
use super::Kernel;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// How the repulsive term is evaluated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Exact,
    /// Barnes-Hut with this angle (θ); output dimension 2 or 3, Student-t kernel.
    BarnesHut(f64),
    /// FFT-interpolated repulsion on a grid ([`super::fft`]); output dimension 1 or 2, Student-t kernel.
    Fft,
}

/// Rows per parallel task.
const TILE: usize = 256;

/// What the optimiser minimises.
pub struct Problem {
    pub n: usize,
    pub dim: usize,
    /// Symmetric joint affinities (sum 1): the attraction of every kernel.
    pub p: Csr,
    /// Asymmetric SNE only: the conditional rows p_{j|i} (each summing to 1), for the KL.
    pub p_cond: Option<Csr>,
    pub kernel: Kernel,
    pub method: Method,
    plogp: f64,
    /// Kernel transform and plans of the FFT method, reused across iterations.
    pub fft_cache: std::sync::Mutex<super::fft::Cache>,
    /// Where the points are stored, once [`Problem::reorder`] has moved them: then `y`,
    /// gradients and P (rows and columns) are in stored positions.
    pub locality: Option<Locality>,
}

fn plogp_of(p: &Csr) -> f64 {
    let parts: Vec<f64> = p.data.par_chunks(4096).map(|c| c.iter().filter(|&&v| v > 0.0).map(|&v| v * v.ln()).sum::<f64>()).collect();
    parts.iter().sum()
}

impl Problem {
    pub fn new(p: Csr, p_cond: Option<Csr>, dim: usize, kernel: Kernel, method: Method) -> Result<Self> {
        let n = p.n;
        p.validate(n)?;
        if dim == 0 {
            return Err(Error::InvalidParameter("n_components must be at least 1".into()));
        }
        if let Kernel::StudentT(a) = kernel {
            if !(a > 0.0) || !a.is_finite() {
                return Err(Error::InvalidParameter(format!("dof must be positive, got {a}")));
            }
        }
        if let Method::BarnesHut(theta) = method {
            if !(2..=3).contains(&dim) {
                return Err(Error::InvalidParameter(format!(
                    "Barnes-Hut supports n_components 2 or 3, got {dim}; use method='exact'"
                )));
            }
            if !matches!(kernel, Kernel::StudentT(_)) {
                return Err(Error::InvalidParameter("Barnes-Hut needs the Student-t kernel; use method='exact' for SNE".into()));
            }
            if !(theta >= 0.0) || !theta.is_finite() {
                return Err(Error::InvalidParameter(format!("angle must be >= 0, got {theta}")));
            }
        }
        if method == Method::Fft {
            if !(1..=2).contains(&dim) {
                return Err(Error::InvalidParameter(format!(
                    "method='fft' supports n_components 1 or 2, got {dim}; use method='barnes_hut' for 3-D"
                )));
            }
            if !matches!(kernel, Kernel::StudentT(_)) {
                return Err(Error::InvalidParameter("method='fft' needs the Student-t kernel; use method='exact' for SNE".into()));
            }
        }
        let plogp = match (&kernel, &p_cond) {
            (Kernel::Sne, Some(pc)) => {
                pc.validate(n)?;
                plogp_of(pc)
            }
            (Kernel::Sne, None) => return Err(Error::InvalidParameter("SNE needs the conditional affinities".into())),
            _ => plogp_of(&p),
        };
        Ok(Problem { n, dim, p, p_cond, kernel, method, plogp, fft_cache: Default::default(), locality: None })
    }

    /// Whether [`Problem::reorder`] pays off here (large n, a sparse P; the exact
    /// method's dense fast path assumes the input order).
    pub fn wants_locality(&self) -> bool {
        self.n >= loc::MIN_POINTS && self.method != Method::Exact && (1..=3).contains(&self.dim)
    }

    /// Stores the points (`st`'s rows, P's columns) in the Morton order of the current
    /// embedding; see [`super::locality`].
    pub fn reorder(&mut self, st: &mut State) {
        let (n, dim) = (self.n, self.dim);
        let perm = loc::morton_order(&st.y, n, dim);
        let old_to_new = loc::inverse(&perm);
        loc::permute_csr(&mut self.p, &perm, &old_to_new);
        if let Some(pc) = self.p_cond.as_mut() {
            loc::permute_csr(pc, &perm, &old_to_new);
        }
        let row: Vec<u32> = match &self.locality {
            Some(l) => perm.iter().map(|&q| l.row[q as usize]).collect(),
            None => perm.clone(),
        };
        let pos = loc::inverse(&row);
        self.locality = Some(Locality { row, pos });
        for a in [&mut st.y, &mut st.update, &mut st.gains] {
            loc::gather_rows(a, &perm, dim);
        }
    }

    /// Gives P (and the conditional P) back their original column indices; the
    /// caller keeps or maps the state with [`Problem::to_original`] first.
    pub fn restore_labels(&mut self) {
        if let Some(l) = self.locality.take() {
            // Stored position q holds original point row[q]: original i comes from position pos[i].
            loc::permute_csr(&mut self.p, &l.pos, &l.row);
            if let Some(pc) = self.p_cond.as_mut() {
                loc::permute_csr(pc, &l.pos, &l.row);
            }
        }
    }

    /// n × dim rows in original point order → stored order.
    pub fn to_positions(&self, a: &[f64]) -> Vec<f64> {
        let mut v = a.to_vec();
        // (A wrong length is left for `gradient` to report.)
        if let (Some(l), true) = (&self.locality, a.len() == self.n * self.dim) {
            loc::gather_rows(&mut v, &l.row, self.dim);
        }
        v
    }

    /// n × dim rows in stored order → original point order.
    pub fn to_original(&self, a: &[f64]) -> Vec<f64> {
        let mut v = a.to_vec();
        if let (Some(l), true) = (&self.locality, a.len() == self.n * self.dim) {
            loc::gather_rows(&mut v, &l.pos, self.dim);
        }
        v
    }

    /// Writes the gradient (÷4) at `y` with exaggeration `exag` into `grad`;
    /// returns KL(P‖Q) if `want_kl`, else NaN.
    pub fn gradient(&self, y: &[f64], exag: f64, grad: &mut [f64], want_kl: bool) -> Result<f64> {
        let (n, dim) = (self.n, self.dim);
        if y.len() != n * dim || grad.len() != n * dim {
            return Err(Error::Shape(format!("embedding must be {n} x {dim}")));
        }
        let complete = self.p.nnz() == n * (n - 1) && self.locality.is_none();
        if !want_kl && complete && self.method == Method::Exact && self.kernel == Kernel::StudentT(1.0) && (dim == 2 || dim == 3) {
            if dim == 2 {
                super::exact::fused_tsne_gradient::<2>(y, n, &self.p.data, exag, grad);
            } else {
                super::exact::fused_tsne_gradient::<3>(y, n, &self.p.data, exag, grad);
            }
            return Ok(f64::NAN);
        }
        let mut rep = vec![0.0; n * dim];
        let log_norm = match self.method {
            Method::Exact => exact_repulsion(y, n, dim, self.kernel, &mut rep),
            Method::BarnesHut(theta) => {
                let dof = match self.kernel {
                    Kernel::StudentT(a) => a,
                    _ => unreachable!("checked in new"),
                };
                let z = if dim == 2 { bh_repulsion::<2>(y, n, theta, dof, &mut rep) } else { bh_repulsion::<3>(y, n, theta, dof, &mut rep) };
                let inv = 1.0 / z;
                rep.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
                z.ln()
            }
            Method::Fft => {
                let dof = match self.kernel {
                    Kernel::StudentT(a) => a,
                    _ => unreachable!("checked in new"),
                };
                let mut cache = self.fft_cache.lock().unwrap_or_else(|e| e.into_inner());
                super::fft::fft_repulsion(y, n, dim, dof, &mut cache, &mut rep)?
            }
        };
        let plogw = match (dim, want_kl) {
            (2, false) => attract::<2, false>(&self.p, y, dim, self.kernel, exag, &rep, grad),
            (3, false) => attract::<3, false>(&self.p, y, dim, self.kernel, exag, &rep, grad),
            (_, false) => attract::<0, false>(&self.p, y, dim, self.kernel, exag, &rep, grad),
            (2, true) => attract::<2, true>(&self.p, y, dim, self.kernel, exag, &rep, grad),
            (3, true) => attract::<3, true>(&self.p, y, dim, self.kernel, exag, &rep, grad),
            (_, true) => attract::<0, true>(&self.p, y, dim, self.kernel, exag, &rep, grad),
        };
        if !want_kl {
            return Ok(f64::NAN);
        }
        Ok(match self.kernel {
            Kernel::Sne => {
                let pc = self.p_cond.as_ref().expect("checked in new");
                // ln w = −d², so −Σ pc ln w = Σ pc d².
                let parts: Vec<f64> = (0..n)
                    .into_par_iter()
                    .with_min_len(TILE)
                    .map(|i| {
                        let (c, v) = pc.row(i);
                        c.iter().zip(v).map(|(&j, &p)| p * sqd(y, i, j as usize, dim)).sum::<f64>()
                    })
                    .collect();
                self.plogp + fsum(&parts) + log_norm
            }
            _ => self.plogp - plogw + log_norm,
        })
    }

    pub fn kl(&self, y: &[f64]) -> Result<f64> {
        let mut g = vec![0.0; y.len()];
        self.gradient(y, 1.0, &mut g, true)
    }
}

#[inline(always)]
fn sqd(y: &[f64], i: usize, j: usize, dim: usize) -> f64 {
    let mut s = 0.0;
    for d in 0..dim {
        let t = y[i * dim + d] - y[j * dim + d];
        s += t * t;
    }
    s
}

/// grad_i = exag·A_i − rep_i; returns Σ p_ij ln w_ij (fixed-order sum).
fn attract<const D: usize, const KL: bool>(p: &Csr, y: &[f64], dim: usize, kernel: Kernel, exag: f64, rep: &[f64], grad: &mut [f64]) -> f64 {
    let dim = if D > 0 { D } else { dim };
    if D == 2 && !KL && kernel == Kernel::StudentT(1.0) {
        // The hot case: vectorised Cauchy rows.
        let avx = crate::simd::has_avx2();
        grad.par_chunks_mut(TILE * 2).enumerate().for_each(|(t, g)| {
            for (r, grow) in g.chunks_mut(2).enumerate() {
                let i = t * TILE + r;
                let (cols, vals) = p.row(i);
                let a = super::simd::attract_row_2d([y[2 * i], y[2 * i + 1]], cols, vals, y, avx);
                grow[0] = exag * a[0] - rep[2 * i];
                grow[1] = exag * a[1] - rep[2 * i + 1];
            }
        });
        return 0.0;
    }
    let parts: Vec<f64> = grad
        .par_chunks_mut(TILE * dim)
        .enumerate()
        .map(|(t, g)| {
            let mut s = 0.0;
            for (r, grow) in g.chunks_mut(dim).enumerate() {
                let i = t * TILE + r;
                let yi = &y[i * dim..i * dim + dim];
                let mut acc = [0.0f64; 8];
                let acc = &mut acc[..dim.min(8)];
                let mut big = if dim > 8 { vec![0.0; dim] } else { Vec::new() };
                let (cols, vals) = p.row(i);
                for (&j, &pij) in cols.iter().zip(vals) {
                    let yj = &y[j as usize * dim..j as usize * dim + dim];
                    let mut d2 = 0.0;
                    for d in 0..dim {
                        let e = yi[d] - yj[d];
                        d2 += e * e;
                    }
                    let c = match kernel {
                        Kernel::StudentT(a) => {
                            let b = 1.0 / (1.0 + d2 / a);
                            if KL {
                                s += pij * a * b.ln();
                            }
                            pij * b
                        }
                        _ => {
                            if KL {
                                s -= pij * d2;
                            }
                            pij
                        }
                    };
                    if dim <= 8 {
                        for d in 0..dim {
                            acc[d] += c * (yi[d] - yj[d]);
                        }
                    } else {
                        for d in 0..dim {
                            big[d] += c * (yi[d] - yj[d]);
                        }
                    }
                }
                for d in 0..dim {
                    let a = if dim <= 8 { acc[d] } else { big[d] };
                    grow[d] = exag * a - rep[i * dim + d];
                }
            }
            s
        })
        .collect();
    parts.iter().sum()
}

/// Positions, velocities and gains: everything that survives between chunks.
#[derive(Clone, Debug)]
pub struct State {
    pub y: Vec<f64>,
    pub update: Vec<f64>,
    pub gains: Vec<f64>,
    /// Iterations since the points were last reordered ([`optimize_local`]).
    pub since_reorder: usize,
}

impl State {
    pub fn new(y: Vec<f64>) -> Self {
        let m = y.len();
        State { y, update: vec![0.0; m], gains: vec![1.0; m], since_reorder: 0 }
    }
}

/// One stretch of iterations with fixed settings.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub n_iter: usize,
    pub exaggeration: f64,
    pub momentum: f64,
    pub learning_rate: f64,
    /// Largest per-point step (∞ for none).
    pub max_step_norm: f64,
}

/// The additive term of the gain decrease (see [`step_point`]).
pub const MIN_GAIN: f64 = 0.01;

/// sign(x) ∈ {−1, 0, 1}, 0 for ±0 (as C's / numpy's sign in FIt-SNE and openTSNE).
#[inline(always)]
fn sgn(x: f64) -> i8 {
    (x > 0.0) as i8 - (x < 0.0) as i8
}

/// Applies the gains / momentum / step-norm update to one point's coordinates.
///
/// The gains are FIt-SNE's and openTSNE's delta-bar-delta (the reference codes of the FFT
/// method): +0.2 when sign(g) ≠ sign(u) — sign(0) = 0, so the first step raises every gain —
/// else 0.8·gain + [`MIN_GAIN`], which settles at 5·MIN_GAIN = 0.05 instead of bhtsne's floor
/// at 0.01 (a gain that low all but freezes a coordinate in the final phase).
#[inline(always)]
fn step_point(y: &mut [f64], u: &mut [f64], gains: &mut [f64], g: &[f64], momentum: f64, lr: f64, max_step: f64) {
    let mut nrm = 0.0;
    for d in 0..y.len() {
        gains[d] = if sgn(g[d]) != sgn(u[d]) { gains[d] + 0.2 } else { gains[d] * 0.8 + MIN_GAIN };
        u[d] = momentum * u[d] - lr * gains[d] * g[d];
        nrm += u[d] * u[d];
    }
    if nrm > max_step * max_step {
        let s = max_step / nrm.sqrt();
        u.iter_mut().for_each(|v| *v *= s);
    }
    for d in 0..y.len() {
        y[d] += u[d];
    }
}

/// Runs `sch.n_iter` iterations; `should_stop` is polled every iteration
/// (returning true aborts with [`Error::Interrupted`]).
pub fn optimize(prob: &Problem, st: &mut State, sch: &Schedule, should_stop: &(dyn Fn() -> bool + Sync)) -> Result<()> {
    let dim = prob.dim;
    let mut grad = vec![0.0; prob.n * dim];
    for _ in 0..sch.n_iter {
        if should_stop() {
            return Err(Error::Interrupted);
        }
        prob.gradient(&st.y, sch.exaggeration, &mut grad, false)?;
        let c = TILE * dim;
        st.y.par_chunks_mut(c)
            .zip(st.update.par_chunks_mut(c))
            .zip(st.gains.par_chunks_mut(c))
            .zip(grad.par_chunks(c))
            .for_each(|(((y, u), gn), g)| {
                for (((yp, up), gp), gg) in y.chunks_mut(dim).zip(u.chunks_mut(dim)).zip(gn.chunks_mut(dim)).zip(g.chunks(dim)) {
                    step_point(yp, up, gp, gg, sch.momentum, sch.learning_rate, sch.max_step_norm);
                }
            });
    }
    if st.y.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("the embedding diverged (NaN or infinity); try a smaller learning_rate".into()));
    }
    Ok(())
}

/// [`optimize`], with the points stored in the embedding's Morton order where that pays
/// ([`Problem::wants_locality`]): reordered before the first iteration and every
/// [`loc::EVERY`] iterations after. `st` is in stored order throughout.
pub fn optimize_local(
    prob: &mut Problem,
    st: &mut State,
    sch: &Schedule,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    if !prob.wants_locality() {
        return optimize(prob, st, sch, should_stop);
    }
    let mut left = sch.n_iter;
    loop {
        if prob.locality.is_none() || st.since_reorder >= loc::EVERY {
            prob.reorder(st);
            st.since_reorder = 0;
        }
        let step = left.min(loc::EVERY - st.since_reorder);
        optimize(
            prob,
            st,
            &Schedule {
                n_iter: step,
                ..*sch
            },
            should_stop,
        )?;
        st.since_reorder += step;
        left -= step;
        if left == 0 {
            return Ok(());
        }
    }
}

/// Places new points against a fixed reference embedding (openTSNE-style).
///
/// Row i of `p_new` holds p_{j|i} over reference points (summing to 1). Each
/// new point minimises KL(P_i‖Q_i) with q_{j|i} = w_ij / Σ_k w_ik over the
/// reference points only, starting from `y` (`m × dim`): gradient (÷2)
/// Σ_j p_ij b_ij (y_i − y_j) − Σ_j w_ij b_ij (y_i − y_j) / Z_i, repulsion by
/// Barnes-Hut on the reference tree. Points are independent: parallel, deterministic.
#[allow(clippy::too_many_arguments)]
pub fn transform(
    ref_y: &[f64], n_ref: usize, dim: usize, p_new: &Csr, y: &mut [f64], dof: f64, theta: f64, sch: &Schedule,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    p_new.validate(n_ref)?;
    let m = p_new.n;
    if y.len() != m * dim || ref_y.len() != n_ref * dim {
        return Err(Error::Shape("transform: embedding sizes do not match".into()));
    }
    match dim {
        2 => transform_d::<2>(ref_y, n_ref, p_new, y, dof, theta, sch, should_stop),
        3 => transform_d::<3>(ref_y, n_ref, p_new, y, dof, theta, sch, should_stop),
        _ => Err(Error::InvalidParameter("transform supports n_components 2 or 3".into())),
    }
}

#[allow(clippy::too_many_arguments)]
fn transform_d<const D: usize>(
    ref_y: &[f64], n_ref: usize, p_new: &Csr, y: &mut [f64], dof: f64, theta: f64, sch: &Schedule,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let tree = super::bh::Tree::<D>::build(ref_y, n_ref);
    let kern = super::bh::student_t(dof);
    let theta2 = theta * theta;
    let stopped = std::sync::atomic::AtomicBool::new(false);
    y.par_chunks_mut(32 * D).enumerate().for_each(|(t, chunk)| {
        if stopped.load(std::sync::atomic::Ordering::Relaxed) || should_stop() {
            stopped.store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let mut stack = Vec::with_capacity(64 * (1 << D));
        for (r, yp) in chunk.chunks_mut(D).enumerate() {
            let i = t * 32 + r;
            let (cols, vals) = p_new.row(i);
            let mut u = [0.0f64; D];
            let mut gains = [1.0f64; D];
            for _ in 0..sch.n_iter {
                let yq: [f64; D] = std::array::from_fn(|d| yp[d]);
                let (z, f) = tree.query(&yq, u32::MAX, theta2, &kern, &mut stack);
                let mut g = [0.0f64; D];
                for (&j, &pij) in cols.iter().zip(vals) {
                    let yj = &ref_y[j as usize * D..j as usize * D + D];
                    let mut d2 = 0.0;
                    for d in 0..D {
                        d2 += (yq[d] - yj[d]) * (yq[d] - yj[d]);
                    }
                    let b = 1.0 / (1.0 + d2 / dof);
                    for d in 0..D {
                        g[d] += pij * b * (yq[d] - yj[d]);
                    }
                }
                let iz = if z > 0.0 { 1.0 / z } else { 0.0 };
                for d in 0..D {
                    g[d] -= f[d] * iz;
                }
                step_point(yp, &mut u, &mut gains, &g, sch.momentum, sch.learning_rate, sch.max_step_norm);
            }
        }
    });
    if stopped.into_inner() {
        return Err(Error::Interrupted);
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("transform diverged (NaN or infinity)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsne::affinity::{conditional, knn_to_csr, symmetrize};
    use crate::tsne::SplitMix;

    fn problem(n: usize, dim: usize, kernel: Kernel, method: Method) -> (Problem, Vec<f64>) {
        let mut rng = SplitMix(3);
        let x: Vec<f64> = (0..n * 4).map(|_| rng.uniform()).collect();
        let k = n - 1;
        let mut idx = Vec::new();
        let mut d = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    idx.push(j as u32);
                    d.push((0..4).map(|t| (x[i * 4 + t] - x[j * 4 + t]).powi(2)).sum::<f64>());
                }
            }
        }
        let pc = conditional(&d, n, k, 5.0).unwrap();
        let cond = knn_to_csr(&idx, &pc, n, k);
        let p = symmetrize(&cond);
        let pc = if kernel == Kernel::Sne {
            let mut c = cond.clone();
            c.data.iter_mut().for_each(|v| *v /= 1.0);
            Some(c)
        } else {
            None
        };
        let y: Vec<f64> = (0..n * dim).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        (Problem::new(p, pc, dim, kernel, method).unwrap(), y)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for &(kernel, dim) in &[(Kernel::StudentT(1.0), 2), (Kernel::StudentT(0.5), 3), (Kernel::Gaussian, 2), (Kernel::StudentT(1.0), 5)] {
            let n = 20;
            let (prob, y) = problem(n, dim, kernel, Method::Exact);
            let mut g = vec![0.0; n * dim];
            prob.gradient(&y, 1.0, &mut g, true).unwrap();
            let h = 1e-6;
            for t in 0..n * dim {
                let mut yp = y.clone();
                yp[t] += h;
                let mut ym = y.clone();
                ym[t] -= h;
                let fd = (prob.kl(&yp).unwrap() - prob.kl(&ym).unwrap()) / (2.0 * h);
                assert!((4.0 * g[t] - fd).abs() < 1e-6 * (1.0 + fd.abs()), "{kernel:?} {t}: {} vs {fd}", 4.0 * g[t]);
            }
        }
    }

    #[test]
    fn sne_gradient_matches_finite_differences() {
        let n = 15;
        let (prob, y) = problem(n, 2, Kernel::Sne, Method::Exact);
        let mut g = vec![0.0; n * 2];
        prob.gradient(&y, 1.0, &mut g, true).unwrap();
        let h = 1e-6;
        for t in 0..n * 2 {
            let mut yp = y.clone();
            yp[t] += h;
            let mut ym = y.clone();
            ym[t] -= h;
            let fd = (prob.kl(&yp).unwrap() - prob.kl(&ym).unwrap()) / (2.0 * h);
            // The optimiser's objective is the KL sum / n: gradient (÷4) ×4n = ∂(Σ_i KL_i)/∂y.
            assert!((4.0 * n as f64 * g[t] - fd).abs() < 1e-5 * (1.0 + fd.abs()), "{t}: {} vs {fd}", 4.0 * n as f64 * g[t]);
        }
    }

    #[test]
    fn gains_follow_the_fitsne_rule() {
        // First step from rest: sign(u) = 0 differs from either sign of g, so both gains rise.
        let (mut y, mut u, mut gn) = (vec![0.0; 2], vec![0.0; 2], vec![1.0; 2]);
        step_point(&mut y, &mut u, &mut gn, &[1.0, -2.0], 0.5, 0.1, f64::INFINITY);
        assert_eq!(gn, vec![1.2, 1.2]);
        assert_eq!(u, vec![-0.1 * 1.2, 0.2 * 1.2]);
        assert_eq!(y, u);
        // A gradient agreeing with the velocity (overshoot) shrinks the gain: g ← 0.8 g + 0.01,
        // whose fixed point is 0.05 (not a floor at 0.01).
        let mut want = 1.2f64;
        for _ in 0..200 {
            let g = [u[0].signum(), u[1].signum()]; // the same sign as the velocity
            step_point(&mut y, &mut u, &mut gn, &g, 0.0, 1e-9, f64::INFINITY);
            want = want * 0.8 + MIN_GAIN;
        }
        assert!((gn[0] - want).abs() < 1e-12 && (want - 0.05).abs() < 1e-12, "{gn:?} {want}");
        // The step-norm cap scales the whole velocity of the point.
        let (mut y, mut u, mut gn) = (vec![0.0; 2], vec![0.0; 2], vec![1.0; 2]);
        step_point(&mut y, &mut u, &mut gn, &[-30.0, -40.0], 0.8, 1.0 / 1.2, 5.0);
        assert!((u[0] - 3.0).abs() < 1e-12 && (u[1] - 4.0).abs() < 1e-12, "{u:?}");
    }

    #[test]
    fn bh_theta_zero_equals_exact() {
        let n = 60;
        let (pe, y) = problem(n, 2, Kernel::StudentT(1.0), Method::Exact);
        let pb = Problem::new(pe.p.clone(), None, 2, Kernel::StudentT(1.0), Method::BarnesHut(0.0)).unwrap();
        let mut g1 = vec![0.0; n * 2];
        let mut g2 = vec![0.0; n * 2];
        let k1 = pe.gradient(&y, 1.0, &mut g1, true).unwrap();
        let k2 = pb.gradient(&y, 1.0, &mut g2, true).unwrap();
        assert!((k1 - k2).abs() < 1e-10);
        for (a, b) in g1.iter().zip(&g2) {
            assert!((a - b).abs() < 1e-12);
        }
        // The fused exact path (no KL requested) gives the same gradient.
        let mut g3 = vec![0.0; n * 2];
        pe.gradient(&y, 1.0, &mut g3, false).unwrap();
        for (a, b) in g1.iter().zip(&g3) {
            assert!((a - b).abs() < 1e-12, "{a} {b}");
        }
    }

    /// Stored in Morton order, a problem gives the same gradient, KL and trajectory
    /// (mapped back to the original points), and P gets its labels back.
    #[test]
    fn reordered_points_same_gradient_and_run() {
        let cases = [
            (2, Kernel::StudentT(1.0), Method::Fft),
            (1, Kernel::StudentT(0.5), Method::Fft),
            (2, Kernel::StudentT(1.0), Method::BarnesHut(0.5)),
            (3, Kernel::StudentT(1.0), Method::Exact),
            (2, Kernel::Sne, Method::Exact),
        ];
        for (dim, kernel, method) in cases {
            let n = 120;
            let (plain, y) = problem(n, dim, kernel, method);
            let (mut moved, _) = problem(n, dim, kernel, method);
            let p0 = moved.p.clone();
            let mut st = State::new(y.clone());
            moved.reorder(&mut st);
            assert!(moved
                .locality
                .as_ref()
                .unwrap()
                .row
                .iter()
                .enumerate()
                .any(|(q, &r)| q as u32 != r));
            assert_eq!(moved.to_original(&st.y), y);
            let (mut g0, mut g1) = (vec![0.0; n * dim], vec![0.0; n * dim]);
            let kl0 = plain.gradient(&y, 4.0, &mut g0, true).unwrap();
            let kl1 = moved.gradient(&st.y, 4.0, &mut g1, true).unwrap();
            let g1 = moved.to_original(&g1);
            let scale = g0.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in g0.iter().zip(&g1) {
                assert!(
                    (a - b).abs() <= 1e-9 * scale,
                    "{method:?} {kernel:?}: {a} vs {b}"
                );
            }
            assert!(
                (kl0 - kl1).abs() <= 1e-9 * kl0.abs().max(1.0),
                "{kl0} vs {kl1}"
            );
            // A run with reorderings in between (EVERY < 150) follows the plain run.
            let sch = Schedule {
                n_iter: 150,
                exaggeration: 1.0,
                momentum: 0.5,
                learning_rate: 10.0,
                max_step_norm: 5.0,
            };
            let mut s0 = State::new(y.clone());
            optimize(&plain, &mut s0, &sch, &|| false).unwrap();
            let mut left = sch.n_iter;
            while left > 0 {
                let step = left.min(60);
                optimize(
                    &moved,
                    &mut st,
                    &Schedule {
                        n_iter: step,
                        ..sch
                    },
                    &|| false,
                )
                .unwrap();
                moved.reorder(&mut st);
                left -= step;
            }
            let y1 = moved.to_original(&st.y);
            let spread = s0.y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in s0.y.iter().zip(&y1) {
                assert!(
                    (a - b).abs() <= 1e-6 * spread,
                    "{method:?} {kernel:?}: {a} vs {b}"
                );
            }
            moved.restore_labels();
            assert!(moved.locality.is_none());
            assert_eq!(moved.p.indices, p0.indices);
            assert_eq!(moved.p.data, p0.data);
        }
    }

    #[test]
    fn optimize_local_reorders_only_large_sparse_problems() {
        let (mut small, y) = problem(60, 2, Kernel::StudentT(1.0), Method::Fft);
        let mut st = State::new(y);
        let sch = Schedule {
            n_iter: 3,
            exaggeration: 1.0,
            momentum: 0.5,
            learning_rate: 10.0,
            max_step_norm: 5.0,
        };
        optimize_local(&mut small, &mut st, &sch, &|| false).unwrap();
        assert!(small.locality.is_none());
    }
}
