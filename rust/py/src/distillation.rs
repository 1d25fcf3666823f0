//! Bindings of the distillation losses (`reprkit_core::losses::dino`): DINO's
//! multi-crop cross-entropy between a centred, sharpened teacher softmax and the
//! student log-softmax. Views come as lists of C-contiguous B×K arrays of one
//! float dtype; the forward returns the loss and the per-row log-sum-exps, the
//! backward recomputes the tiles from them.

use crate::arrays::{slice_of, to_pyarray};
use crate::held::{arr1, arr2, is_f64, s1, vec1, Obj};
use crate::runtime::run;
use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::{self as L, Dino, DinoState};
use reprkit_core::Real;

/// Typed views of (teacher views, student views, centre), kept alive for the call.
struct HeldViews<'py, T: numpy::Element> {
    teacher: Vec<Bound<'py, PyArray2<T>>>,
    student: Vec<Bound<'py, PyArray2<T>>>,
    center: Bound<'py, PyArray1<T>>,
}

impl<'py, T: numpy::Element + Real> HeldViews<'py, T> {
    fn new(teacher: &[Obj<'py>], student: &[Obj<'py>], center: &Obj<'py>) -> PyResult<Self> {
        let t = teacher.iter().map(|o| arr2::<T>(o, "teacher_out")).collect::<PyResult<Vec<_>>>()?;
        let s = student.iter().map(|o| arr2::<T>(o, "student_out")).collect::<PyResult<Vec<_>>>()?;
        Ok(HeldViews { teacher: t, student: s, center: arr1::<T>(center, "center")? })
    }
    fn cfg(&self, teacher_temp: f64, student_temp: f64) -> PyResult<Dino<'_, T>> {
        let first = self.teacher.first().ok_or_else(|| PyTypeError::new_err("teacher_out: no views"))?;
        let (b, k) = (first.shape()[0], first.shape()[1]);
        let teacher = self.teacher.iter().map(|a| slice_of(a, "teacher_out")).collect::<PyResult<Vec<_>>>()?;
        let student = self.student.iter().map(|a| slice_of(a, "student_out")).collect::<PyResult<Vec<_>>>()?;
        Ok(Dino { teacher, student, center: s1(&self.center, "center")?, b, k, teacher_temp, student_temp })
    }
}

fn first_is_f64(teacher: &[Obj<'_>]) -> PyResult<bool> {
    match teacher.first() {
        Some(o) => is_f64(o),
        None => Err(PyTypeError::new_err("teacher_out: expected at least one view")),
    }
}

fn dino_fwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: HeldViews<'py, T>, teacher_temp: f64, student_temp: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let cfg = h.cfg(teacher_temp, student_temp)?;
    let (loss, st) = run(py, n_threads, || L::dino_forward(&cfg))?;
    (loss, vec1(py, st.teacher_lse)?, vec1(py, st.student_lse)?).into_py_any(py)
}

/// dino_loss(teacher, student, center, teacher_temp, student_temp, n_threads) -> (loss, teacher_lse, student_lse)
#[pyfunction]
#[pyo3(signature = (teacher, student, center, teacher_temp, student_temp, n_threads))]
fn dino_loss<'py>(
    py: Python<'py>, teacher: Vec<Obj<'py>>, student: Vec<Obj<'py>>, center: &Obj<'py>, teacher_temp: f64,
    student_temp: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if first_is_f64(&teacher)? {
        dino_fwd_t::<f64>(py, HeldViews::new(&teacher, &student, center)?, teacher_temp, student_temp, n_threads)
    } else {
        dino_fwd_t::<f32>(py, HeldViews::new(&teacher, &student, center)?, teacher_temp, student_temp, n_threads)
    }
}

#[allow(clippy::too_many_arguments)]
fn dino_bwd_t<'py, T: numpy::Element + Real>(
    py: Python<'py>, h: HeldViews<'py, T>, t_lse: &Obj<'py>, s_lse: &Obj<'py>, teacher_temp: f64, student_temp: f64,
    g: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    let cfg = h.cfg(teacher_temp, student_temp)?;
    let (ta, sa) = (arr1::<T>(t_lse, "teacher_lse")?, arr1::<T>(s_lse, "student_lse")?);
    let st = DinoState { teacher_lse: s1(&ta, "teacher_lse")?.to_vec(), student_lse: s1(&sa, "student_lse")?.to_vec() };
    let (b, k) = (cfg.b, cfg.k);
    let grads = run(py, n_threads, || L::dino_backward(&cfg, &st, g))?;
    let out = grads.into_iter().map(|v| to_pyarray(py, v, b, k)).collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, out)?.into_py_any(py)
}

/// dino_loss_backward(teacher, student, center, teacher_lse, student_lse, teacher_temp, student_temp, g, n_threads)
/// -> [∂(g·L)/∂student view s for each s]
#[pyfunction]
#[pyo3(signature = (teacher, student, center, teacher_lse, student_lse, teacher_temp, student_temp, g, n_threads))]
#[allow(clippy::too_many_arguments)]
fn dino_loss_backward<'py>(
    py: Python<'py>, teacher: Vec<Obj<'py>>, student: Vec<Obj<'py>>, center: &Obj<'py>, teacher_lse: &Obj<'py>,
    student_lse: &Obj<'py>, teacher_temp: f64, student_temp: f64, g: f64, n_threads: usize,
) -> PyResult<Py<PyAny>> {
    if first_is_f64(&teacher)? {
        let h = HeldViews::<f64>::new(&teacher, &student, center)?;
        dino_bwd_t(py, h, teacher_lse, student_lse, teacher_temp, student_temp, g, n_threads)
    } else {
        let h = HeldViews::<f32>::new(&teacher, &student, center)?;
        dino_bwd_t(py, h, teacher_lse, student_lse, teacher_temp, student_temp, g, n_threads)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dino_loss, m)?)?;
    m.add_function(wrap_pyfunction!(dino_loss_backward, m)?)?;
    Ok(())
}
