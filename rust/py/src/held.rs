//! Typed views of the NumPy arguments the loss bindings share: checked casts to
//! 1-D / 2-D arrays of one dtype, the (x, labels, ref_x, ref_labels) batch, and
//! the conversions of results back to arrays.

use crate::arrays::{slice_of, to_pyarray};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use reprkit_core::losses::Batch;
use reprkit_core::Real;

pub(crate) type Obj<'py> = Bound<'py, PyAny>;

pub(crate) fn arr2<'py, T: numpy::Element>(o: &Obj<'py>, name: &str) -> PyResult<Bound<'py, PyArray2<T>>> {
    o.cast::<PyArray2<T>>()
        .cloned()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected a 2-D array of the embeddings' float dtype")))
}

pub(crate) fn arr1<'py, T: numpy::Element>(o: &Obj<'py>, name: &str) -> PyResult<Bound<'py, PyArray1<T>>> {
    o.cast::<PyArray1<T>>()
        .cloned()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected a 1-D array of dtype {}", std::any::type_name::<T>())))
}

pub(crate) fn s1<'a, T: numpy::Element>(a: &'a Bound<'_, PyArray1<T>>, name: &str) -> PyResult<&'a [T]> {
    // SAFETY: read-only borrow of an array kept alive by the caller for the call.
    unsafe { a.as_slice() }.map_err(|_| PyTypeError::new_err(format!("{name}: array must be contiguous")))
}

pub(crate) fn is_f64(x: &Obj<'_>) -> PyResult<bool> {
    if x.cast::<PyArray2<f64>>().is_ok() {
        Ok(true)
    } else if x.cast::<PyArray2<f32>>().is_ok() {
        Ok(false)
    } else {
        Err(PyTypeError::new_err("embeddings: expected a 2-D float32 or float64 numpy array"))
    }
}

pub(crate) fn vec1<'py, T: numpy::Element>(py: Python<'py>, v: Vec<T>) -> PyResult<Py<PyAny>> {
    PyArray1::from_vec(py, v).into_py_any(py)
}

pub(crate) fn opt_grad<'py, T: numpy::Element>(py: Python<'py>, g: Vec<T>, rows: usize, cols: usize) -> PyResult<Py<PyAny>> {
    if g.is_empty() { Ok(py.None()) } else { to_pyarray(py, g, rows, cols)?.into_py_any(py) }
}

pub(crate) type Refs<'py, T> = Option<(Bound<'py, PyArray2<T>>, Bound<'py, PyArray1<i64>>)>;

/// Owned typed views of (x, labels, ref_x, ref_labels).
pub(crate) struct Held<'py, T: numpy::Element> {
    pub(crate) x: Bound<'py, PyArray2<T>>,
    pub(crate) labels: Bound<'py, PyArray1<i64>>,
    pub(crate) refs: Refs<'py, T>,
}

impl<'py, T: numpy::Element + Real> Held<'py, T> {
    pub(crate) fn new(x: &Obj<'py>, labels: &Obj<'py>, rx: Option<&Obj<'py>>, rl: Option<&Obj<'py>>) -> PyResult<Self> {
        let refs = match (rx, rl) {
            (Some(a), Some(b)) => Some((arr2::<T>(a, "ref_embeddings")?, arr1::<i64>(b, "ref_labels")?)),
            (None, None) => None,
            _ => return Err(PyTypeError::new_err("ref_embeddings and ref_labels go together")),
        };
        Ok(Held { x: arr2::<T>(x, "embeddings")?, labels: arr1::<i64>(labels, "labels")?, refs })
    }
    pub(crate) fn batch(&self) -> PyResult<Batch<'_, T>> {
        let s = self.x.shape();
        let refs = match &self.refs {
            Some((a, b)) => Some((slice_of(a, "ref_embeddings")?, a.shape()[0], s1(b, "ref_labels")?)),
            None => None,
        };
        Ok(Batch { x: slice_of(&self.x, "embeddings")?, n: s[0], d: s[1], labels: s1(&self.labels, "labels")?, refs })
    }
}

