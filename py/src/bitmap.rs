//! `blockmirror.HBitmap`: the hierarchical dirty bitmap of blockmirror-core.
//!
//! Every argument error (negative or too large integers, granularity 64, ranges past the
//! end, unaligned resets or chunks, wrong serialized lengths, merging different sizes) is
//! an `InvalidArgument`. Operations whose cost grows with the bitmap release the GIL once
//! they touch at least [`DETACH_GRANULES`] granules.

use blockmirror_core::bitmap::{BitmapError, DirtyCursor, HBitmap};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::invalid_argument;

/// Below this many granules an operation is too short for releasing the GIL to pay.
const DETACH_GRANULES: u64 = 1 << 16;

/// A Python `int` in `0..2**64`; anything else (another int, a float, a str) is an
/// `InvalidArgument`, the package's one integer convention.
struct Index(u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Index {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        crate::convert::int_arg(&obj, "an index or count").map(Index)
    }
}

fn to_py(err: BitmapError) -> PyErr {
    invalid_argument(err)
}

/// A dirty bitmap over `size` items with one bit per `2**granularity` items.
///
/// `set` rounds outward to whole granules; `reset` needs a granule-aligned start and count
/// (the count may instead run exactly to the end). Searches return `start` itself when it
/// lies in a matching granule. See blockmirror-core's `bitmap` module for the details.
#[pyclass(name = "HBitmap", module = "blockmirror", eq)]
#[derive(Clone, PartialEq)]
pub struct PyHBitmap {
    inner: HBitmap,
}

impl From<HBitmap> for PyHBitmap {
    /// Wraps a core bitmap (the job views hand out copies of the job's bitmap).
    fn from(inner: HBitmap) -> Self {
        Self { inner }
    }
}

impl PyHBitmap {
    /// Runs `f` on the bitmap, without the GIL when `granules` is large enough to pay.
    fn run_mut<T: Send>(
        slf: &mut PyRefMut<'_, Self>,
        granules: u64,
        f: impl FnOnce(&mut HBitmap) -> T + Send,
    ) -> T {
        let py = slf.py();
        let inner = &mut slf.inner;
        if granules >= DETACH_GRANULES {
            py.detach(|| f(inner))
        } else {
            f(inner)
        }
    }

    /// Granules spanned by `count` items (an upper bound; for the GIL decision only).
    fn span(&self, count: u64) -> u64 {
        count >> self.inner.granularity()
    }
}

#[pymethods]
impl PyHBitmap {
    #[new]
    #[pyo3(signature = (size, granularity = Index(0)), text_signature = "(size, granularity=0)")]
    fn new(size: Index, granularity: Index) -> PyResult<Self> {
        let granularity = u32::try_from(granularity.0)
            .map_err(|_| invalid_argument(format!("granularity {} is out of range (must be below 64)", granularity.0)))?;
        Ok(Self { inner: HBitmap::new(size.0, granularity).map_err(to_py)? })
    }

    /// Size in items.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// log2 of the items per granule.
    #[getter]
    fn granularity(&self) -> u32 {
        self.inner.granularity()
    }

    /// Number of granules: ceil(size / 2**granularity).
    #[getter]
    fn granules(&self) -> u64 {
        self.inner.granules()
    }

    /// Mark [start, start + count) dirty, rounded outward to whole granules.
    fn set(mut slf: PyRefMut<'_, Self>, start: Index, count: Index) -> PyResult<()> {
        let granules = slf.span(count.0);
        Self::run_mut(&mut slf, granules, |b| b.set(start.0, count.0)).map_err(to_py)
    }

    /// Mark [start, start + count) clean; needs granule alignment (or a run to the end).
    fn reset(mut slf: PyRefMut<'_, Self>, start: Index, count: Index) -> PyResult<()> {
        let granules = slf.span(count.0);
        Self::run_mut(&mut slf, granules, |b| b.reset(start.0, count.0)).map_err(to_py)
    }

    /// Mark everything clean.
    fn reset_all(mut slf: PyRefMut<'_, Self>) {
        let granules = slf.inner.granules();
        Self::run_mut(&mut slf, granules, HBitmap::reset_all);
    }

    /// Whether the granule holding `item` is dirty; `item >= size` is `InvalidArgument`.
    fn get(&self, item: Index) -> PyResult<bool> {
        // Past the end is an error, like every other out-of-range call (not a clean bit).
        if item.0 >= self.inner.size() {
            return Err(invalid_argument(format!("item {} is out of range (size {})", item.0, self.inner.size())));
        }
        Ok(self.inner.get(item.0))
    }

    /// Items covered by dirty granules (dirty granules << granularity).
    fn count(&self) -> u64 {
        self.inner.count()
    }

    /// Whether no granule is dirty.
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// First dirty item in [start, start + count) (count None: to the end), or None.
    #[pyo3(signature = (start, count = None))]
    fn next_dirty(&self, start: Index, count: Option<Index>) -> Option<u64> {
        self.inner.next_dirty(start.0, count.map_or(u64::MAX, |c| c.0))
    }

    /// First clean item in [start, start + count) (count None: to the end), or None.
    #[pyo3(signature = (start, count = None))]
    fn next_zero(&self, start: Index, count: Option<Index>) -> Option<u64> {
        self.inner.next_zero(start.0, count.map_or(u64::MAX, |c| c.0))
    }

    /// The first dirty run in [start, end), at most max_count items, as (offset, length).
    fn next_dirty_area(&self, start: Index, end: Index, max_count: Index) -> Option<(u64, u64)> {
        self.inner.next_dirty_area(start.0, end.0, max_count.0).map(|run| (run.start, run.end - run.start))
    }

    /// (dirty, length): the state of `start` and how many items from it share that state.
    fn status(&self, start: Index, count: Index) -> PyResult<(bool, u64)> {
        self.inner.status(start.0, count.0).map_err(to_py)
    }

    /// Iterator over the first item of each dirty granule from the one holding `start`.
    /// It reads the bitmap live: granules reset meanwhile are never returned, granules set
    /// ahead of it are.
    #[pyo3(signature = (start = Index(0)), text_signature = "($self, start=0)")]
    fn iter_dirty(slf: &Bound<'_, Self>, start: Index) -> PyDirtyIterator {
        let cursor = DirtyCursor::new(&slf.borrow().inner, start.0);
        PyDirtyIterator { bitmap: slf.clone().unbind(), cursor }
    }

    /// Items per serialization chunk unit: 64 << granularity.
    fn serialization_align(&self) -> PyResult<u64> {
        self.inner.serialization_align().map_err(to_py)
    }

    /// Bytes in the serialization of the chunk [start, start + count).
    fn serialization_size(&self, start: Index, count: Index) -> PyResult<u64> {
        self.inner.serialization_size(start.0, count.0).map_err(to_py)
    }

    /// The chunk [start, start + count) as little-endian 64-bit words of granule bits.
    fn serialize<'py>(slf: PyRef<'py, Self>, start: Index, count: Index) -> PyResult<Bound<'py, PyBytes>> {
        let py = slf.py();
        let inner = &slf.inner;
        let bytes = if slf.span(count.0) >= DETACH_GRANULES {
            py.detach(|| inner.serialize(start.0, count.0))
        } else {
            inner.serialize(start.0, count.0)
        };
        Ok(PyBytes::new(py, &bytes.map_err(to_py)?))
    }

    /// Replace the chunk [start, start + count) with `data` from `serialize`.
    #[pyo3(signature = (start, count, data, finish = true))]
    fn deserialize(mut slf: PyRefMut<'_, Self>, start: Index, count: Index, data: &[u8], finish: bool) -> PyResult<()> {
        let granules = slf.span(count.0);
        Self::run_mut(&mut slf, granules, |b| b.deserialize_part(start.0, count.0, data, finish)).map_err(to_py)
    }

    /// Mark dirty every item dirty in `other` (same size; any granularity).
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, Self>) -> PyResult<()> {
        if slf.is(other) {
            return Ok(()); // x | x == x
        }
        let other = other.borrow();
        let theirs: &HBitmap = &other.inner;
        let mut this = slf.borrow_mut();
        let granules = this.inner.granules();
        Self::run_mut(&mut this, granules, |b| b.merge(theirs)).map_err(to_py)
    }

    /// Change the size: new items are clean, bits past a smaller end are dropped.
    fn truncate(mut slf: PyRefMut<'_, Self>, new_size: Index) -> PyResult<()> {
        let granules = slf.inner.granules().max(new_size.0 >> slf.inner.granularity());
        Self::run_mut(&mut slf, granules, |b| b.truncate(new_size.0)).map_err(to_py)
    }

    /// An independent copy.
    fn copy(&self) -> Self {
        self.clone()
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "HBitmap(size={}, granularity={}, dirty_granules={}, count={})",
            self.inner.size(),
            self.inner.granularity(),
            self.inner.dirty_granules(),
            self.inner.count()
        )
    }
}

/// Iterator returned by `HBitmap.iter_dirty`: a position that searches the live bitmap.
#[pyclass(name = "DirtyIterator", module = "blockmirror")]
pub struct PyDirtyIterator {
    bitmap: Py<PyHBitmap>,
    cursor: DirtyCursor,
}

#[pymethods]
impl PyDirtyIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<u64>> {
        let bitmap = self.bitmap.bind(py).try_borrow()?;
        Ok(self.cursor.next(&bitmap.inner))
    }
}

/// Adds `HBitmap` and its iterator class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHBitmap>()?;
    m.add_class::<PyDirtyIterator>()?;
    Ok(())
}
