//! `Gradients`: what the backward pass of one shard of a batch produced — candle's dense
//! `GradStore`, and gradient *rows* for embedding lookups made in a sparse pass
//! ([`super::model::Pass::sparse`]) — and [`ParamGrad`], the gradient of one parameter summed
//! over a batch's shards, which the optimizer and the gradient norm read in blocks without
//! materialising the sum.
//!
//! Sparse rows matter because of the word-embedding table: a batch touches a few hundred of its
//! 16,000 rows, yet a dense gradient costs a table-sized zeroed tensor, a copy and two reads per
//! shard, every step.

use candle_core::backprop::GradStore;
use candle_core::{Result, Storage, StorageRef, Tensor, TensorId, Var, WithDType};

use super::model::Lookup;

/// The gradient of rows `ids` of an embedding table: `rows` is `(ids.len(), width)`.
pub struct SparseRows {
    pub table: TensorId,
    pub ids: Vec<u32>,
    pub rows: Tensor,
}

/// One shard's gradients.
pub struct Gradients {
    pub dense: GradStore,
    pub sparse: Vec<SparseRows>,
}

impl From<GradStore> for Gradients {
    fn from(dense: GradStore) -> Self {
        Gradients { dense, sparse: Vec::new() }
    }
}

impl Gradients {
    /// The gradients of a backward pass, with the gradients of `lookups`' rows taken out of the
    /// store as sparse rows of their tables.
    pub fn new(mut dense: GradStore, lookups: Vec<Lookup>) -> Gradients {
        let sparse = lookups
            .into_iter()
            .filter_map(|l| {
                let rows = dense.remove(l.rows.as_tensor())?;
                Some(SparseRows { table: l.table.id(), ids: l.ids, rows })
            })
            .collect();
        Gradients { dense, sparse }
    }
}

/// Marks a table row no shard looked up.
const NONE: u32 = u32::MAX;

/// The sparse rows of one table summed over shards: `rows[slot_of_row[r]]` is row `r`'s
/// gradient, for rows whose slot is not [`NONE`].
struct MergedRows {
    slot_of_row: Vec<u32>,
    rows: Vec<f64>,
    width: usize,
}

/// The gradient of one parameter over all shards of a batch: dense parts (one per shard that
/// has one) plus merged sparse rows.
pub struct ParamGrad {
    pub dense: Vec<Tensor>,
    sparse: Option<MergedRows>,
}

impl ParamGrad {
    /// The gradient of `var` in `grads`, or `None` when no shard produced one. Shards are added
    /// up in their order, so the result does not depend on how many threads computed them.
    pub fn collect(grads: &[Gradients], var: &Var) -> Result<Option<ParamGrad>> {
        let dense: Vec<Tensor> =
            grads.iter().filter_map(|g| g.dense.get(var.as_tensor())).map(Tensor::contiguous).collect::<Result<_>>()?;
        let id = var.as_tensor().id();
        let parts: Vec<&SparseRows> = grads.iter().flat_map(|g| &g.sparse).filter(|s| s.table == id).collect();
        let sparse = if parts.is_empty() {
            None
        } else {
            let (table_rows, width) = var.as_tensor().dims2()?;
            let mut merged = MergedRows { slot_of_row: vec![NONE; table_rows], rows: Vec::new(), width };
            for part in parts {
                let values = part.rows.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                for (k, &id) in part.ids.iter().enumerate() {
                    let Some(slot) = merged.slot_of_row.get_mut(id as usize) else {
                        candle_core::bail!("embedding id {id} outside a table of {table_rows} rows")
                    };
                    if *slot == NONE {
                        *slot = (merged.rows.len() / width) as u32;
                        merged.rows.resize(merged.rows.len() + width, 0.0);
                    }
                    let at = *slot as usize * width;
                    for (m, v) in merged.rows[at..at + width].iter_mut().zip(&values[k * width..(k + 1) * width]) {
                        *m += v;
                    }
                }
            }
            Some(merged)
        };
        Ok((!dense.is_empty() || sparse.is_some()).then_some(ParamGrad { dense, sparse }))
    }

    /// Whether every part is in CPU memory.
    pub fn is_cpu(&self) -> bool {
        self.dense.iter().all(|t| t.device().is_cpu())
    }

    /// The summed gradient as one tensor shaped like `var` (for devices other than the CPU).
    pub fn to_tensor(&self, var: &Var) -> Result<Tensor> {
        // One shard (always the case off the CPU): the gradient itself, without a zeroed sum.
        if let ([only], None) = (self.dense.as_slice(), &self.sparse) {
            return Ok(only.clone());
        }
        let mut sum = var.as_tensor().zeros_like()?;
        for part in &self.dense {
            sum = (sum + part)?;
        }
        if let Some(s) = &self.sparse {
            let mut rows = vec![0.0; s.slot_of_row.len() * s.width];
            for (r, &slot) in s.slot_of_row.iter().enumerate() {
                if slot != NONE {
                    let at = slot as usize * s.width;
                    rows[r * s.width..(r + 1) * s.width].copy_from_slice(&s.rows[at..at + s.width]);
                }
            }
            let rows = Tensor::from_vec(rows, var.shape(), var.device())?.to_dtype(var.dtype())?;
            sum = (sum + rows)?;
        }
        Ok(sum)
    }

    /// Read guards on the dense parts' storage, for [`ParamGrad::view`].
    pub fn guards(&self) -> Vec<(StorageRef<'_>, &candle_core::Layout)> {
        self.dense.iter().map(Tensor::storage_and_layout).collect()
    }

    /// A view of the CPU values for reading blocks of the sum.
    pub fn view<'g, T: WithDType>(
        &'g self,
        guards: &'g [(StorageRef<'_>, &candle_core::Layout)],
    ) -> Result<View<'g, T>> {
        let dense = guards
            .iter()
            .map(|(storage, layout)| {
                let Storage::Cpu(cpu) = &**storage else { candle_core::bail!("gradients must be on the CPU") };
                let Some((a, b)) = layout.contiguous_offsets() else {
                    candle_core::bail!("gradients must be contiguous")
                };
                Ok(&cpu.as_slice::<T>()?[a..b])
            })
            .collect::<Result<_>>()?;
        Ok(View { dense, sparse: self.sparse.as_ref() })
    }
}

/// Borrowed CPU values of a [`ParamGrad`].
pub struct View<'g, T> {
    dense: Vec<&'g [T]>,
    sparse: Option<&'g MergedRows>,
}

impl<T: WithDType> View<'_, T> {
    /// Writes the summed gradient of elements `start..start + out.len()` to `out`.
    pub fn fill(&self, start: usize, out: &mut [T]) {
        let end = start + out.len();
        match self.dense.split_first() {
            Some((first, rest)) => {
                out.copy_from_slice(&first[start..end]);
                for part in rest {
                    for (o, &g) in out.iter_mut().zip(&part[start..end]) {
                        *o += g;
                    }
                }
            }
            None => out.fill(T::zero()),
        }
        let Some(s) = self.sparse else { return };
        let mut i = start;
        while i < end {
            let (row, col) = (i / s.width, i % s.width);
            let len = (s.width - col).min(end - i);
            let slot = s.slot_of_row[row];
            if slot != NONE {
                let at = slot as usize * s.width + col;
                for (o, &g) in out[i - start..i - start + len].iter_mut().zip(&s.rows[at..at + len]) {
                    *o += T::from_f64(g);
                }
            }
            i += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;

    #[test]
    fn sparse_rows_and_dense_parts_add_up() {
        let table = Var::from_tensor(&Tensor::zeros((4, 2), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        let dense = |values: [f32; 8]| {
            let loss = (table.as_tensor() * Tensor::from_vec(values.to_vec(), (4, 2), &Device::Cpu).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            loss.backward().unwrap()
        };
        let rows = |ids: Vec<u32>, values: Vec<f32>| SparseRows {
            table: table.as_tensor().id(),
            rows: Tensor::from_vec(values, (ids.len(), 2), &Device::Cpu).unwrap(),
            ids,
        };
        let shards = [
            Gradients { dense: dense([1.0; 8]), sparse: vec![rows(vec![2, 0, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])] },
            Gradients { dense: dense([0.5; 8]), sparse: vec![rows(vec![3], vec![7.0, 8.0])] },
        ];
        let grad = ParamGrad::collect(&shards, &table).unwrap().unwrap();
        let guards = grad.guards();
        let view = grad.view::<f32>(&guards).unwrap();
        let mut out = vec![0.0f32; 8];
        view.fill(0, &mut out);
        assert_eq!(out, vec![4.5, 5.5, 1.5, 1.5, 7.5, 9.5, 8.5, 9.5]);
        let mut tail = vec![0.0f32; 3];
        view.fill(5, &mut tail);
        assert_eq!(tail, vec![9.5, 8.5, 9.5]);
        let summed = grad.to_tensor(&table).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(summed, vec![4.5, 5.5, 1.5, 1.5, 7.5, 9.5, 8.5, 9.5]);
    }
}
