"""Block masks from and to other selectors' formats, for Plan.set_selection and attention(mask=...).

baatt's block mask is a boolean array [B, H, q_blocks, k_blocks] (Selection.mask, --mask-out):
True where query block I attends to key block J, blocks of `block` consecutive tokens (of the
original order, or of the order perm_q / perm_k give). Every query block must keep at least one key
block. The conversions work on numpy arrays and accept torch tensors (copied to the host); torch is
needed only for from_block_mask / to_block_mask, which take and make flex_attention's BlockMask.

    mask = baatt.masks.from_flex(kv_num_blocks, kv_indices)            # flex_attention's layout
    kv_num_blocks, kv_indices = baatt.masks.to_flex(mask)
    indptr, indices = baatt.masks.to_bsr(mask)                         # block-sparse rows (CSR)
    mask = baatt.masks.from_bsr(indptr, indices, mask.shape)
    mask = baatt.masks.from_block_mask(block_mask)                     # a torch BlockMask
    o = baatt.attention(q, k, v, block=128, mask=mask)
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ._api import Error, Status, _is_torch

__all__ = ["from_flex", "to_flex", "from_bsr", "to_bsr", "from_block_mask", "to_block_mask"]


def _host(x: Any, name: str) -> np.ndarray:
    if _is_torch(x):
        x = x.detach().to("cpu").numpy()
    x = np.asarray(x)
    if x.dtype != bool and not np.issubdtype(x.dtype, np.integer):
        raise Error(Status.BAD_SELECTION, f"{name} has dtype {x.dtype}; expected integers")
    return x


def _bool_mask(mask: Any) -> np.ndarray:
    m = _host(mask, "mask")
    if m.ndim != 4:
        raise Error(Status.BAD_SHAPE, f"mask has shape {m.shape}; expected [B, H, q_blocks, k_blocks]")
    if m.dtype != bool:
        if ((m != 0) & (m != 1)).any():
            raise Error(Status.BAD_SELECTION, "mask entries must be 0 or 1 (or booleans)")
        m = m.astype(bool)
    return m


def from_flex(kv_num_blocks: Any, kv_indices: Any, full_kv_num_blocks: Any = None, full_kv_indices: Any = None,
              k_blocks: Optional[int] = None) -> np.ndarray:
    """flex_attention's block layout to a boolean mask [B, H, q_blocks, k_blocks].

    kv_num_blocks [B, H, q_blocks] and kv_indices [B, H, q_blocks, n]: row I keeps the key blocks
    kv_indices[..., I, :kv_num_blocks[..., I]]; full_kv_num_blocks / full_kv_indices (the blocks
    flex_attention runs without its mask_mod) are added to them. k_blocks defaults to n. baatt
    attends to every token of a kept block: a mask_mod's token-level mask inside partial blocks is
    not applied."""
    mask = None
    for num, idx, name in ((kv_num_blocks, kv_indices, "kv"), (full_kv_num_blocks, full_kv_indices, "full_kv")):
        if num is None and idx is None:
            continue
        if num is None or idx is None:
            raise Error(Status.INVALID_ARGUMENT, f"{name}_num_blocks and {name}_indices go together")
        num, idx = _host(num, f"{name}_num_blocks"), _host(idx, f"{name}_indices")
        if idx.ndim != 4 or num.shape != idx.shape[:3]:
            raise Error(Status.BAD_SHAPE, f"{name}_num_blocks {num.shape} and {name}_indices {idx.shape}: expected "
                        "[B, H, q_blocks] and [B, H, q_blocks, n]")
        nk = idx.shape[3] if k_blocks is None else int(k_blocks)
        if mask is None:
            mask = np.zeros(idx.shape[:3] + (nk,), bool)
        elif mask.shape[:3] != idx.shape[:3]:
            raise Error(Status.BAD_SHAPE, f"kv_indices {mask.shape[:3]} and full_kv_indices {idx.shape[:3]} differ")
        if (num < 0).any() or (num > idx.shape[3]).any():
            raise Error(Status.BAD_SELECTION, f"{name}_num_blocks must be in [0, {idx.shape[3]}]")
        used = np.arange(idx.shape[3]) < num[..., None]
        if ((idx < 0) | (idx >= nk))[used].any():
            raise Error(Status.BAD_SELECTION, f"{name}_indices holds a block outside [0, {nk})")
        b, h, i, _ = np.nonzero(used)
        mask[b, h, i, idx[used]] = True
    if mask is None:
        raise Error(Status.INVALID_ARGUMENT, "from_flex needs kv_num_blocks and kv_indices")
    return mask


def to_flex(mask: Any) -> Tuple[np.ndarray, np.ndarray]:
    """A mask [B, H, q_blocks, k_blocks] to flex_attention's (kv_num_blocks int32 [B, H, q_blocks],
    kv_indices int32 [B, H, q_blocks, k_blocks]): each row's kept blocks first, ascending, then the
    others, as flex_attention orders a dense block mask."""
    m = _bool_mask(mask)
    order = np.argsort(~m, axis=-1, kind="stable")
    return m.sum(-1, dtype=np.int32), order.astype(np.int32)


def to_bsr(mask: Any) -> Tuple[np.ndarray, np.ndarray]:
    """A mask [B, H, q_blocks, k_blocks] to block-sparse rows: the B * H * q_blocks query blocks in
    C order are the rows of a (B * H * q_blocks) x k_blocks CSR matrix (scipy.sparse.csr_matrix's
    layout): indptr int64 [rows + 1], indices int32 [kept blocks], ascending in each row."""
    m = _bool_mask(mask)
    rows = m.reshape(-1, m.shape[-1])
    indptr = np.zeros(rows.shape[0] + 1, np.int64)
    np.cumsum(rows.sum(-1), out=indptr[1:])
    return indptr, np.nonzero(rows)[1].astype(np.int32)


def from_bsr(indptr: Any, indices: Any, shape: Sequence[int]) -> np.ndarray:
    """Block-sparse rows (to_bsr's layout) back to a boolean mask of shape [B, H, q_blocks, k_blocks]."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise Error(Status.BAD_SHAPE, f"shape {shape}: expected [B, H, q_blocks, k_blocks]")
    indptr, indices = _host(indptr, "indptr").reshape(-1), _host(indices, "indices").reshape(-1)
    rows = shape[0] * shape[1] * shape[2]
    if indptr.shape[0] != rows + 1:
        raise Error(Status.BAD_SHAPE, f"indptr has {indptr.shape[0]} entries; shape {shape} needs {rows + 1}")
    if indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != indices.shape[0]:
        raise Error(Status.BAD_SELECTION, "indptr must start at 0, never decrease and end at len(indices)")
    if ((indices < 0) | (indices >= shape[3])).any():
        raise Error(Status.BAD_SELECTION, f"indices holds a block outside [0, {shape[3]})")
    mask = np.zeros((rows, shape[3]), bool)
    mask[np.repeat(np.arange(rows), np.diff(indptr)), indices] = True
    return mask.reshape(shape)


def from_block_mask(block_mask: Any) -> np.ndarray:
    """A torch flex_attention BlockMask (partial and full blocks) to a boolean mask. Its BLOCK_SIZE
    must be square and is the plan's `block` (32, 64 or 128)."""
    size = tuple(block_mask.BLOCK_SIZE) if not isinstance(block_mask.BLOCK_SIZE, int) else (block_mask.BLOCK_SIZE,) * 2
    if size[0] != size[1]:
        raise Error(Status.UNSUPPORTED_BLOCK_SIZE, f"BlockMask BLOCK_SIZE {size}: baatt blocks are square")
    return from_flex(block_mask.kv_num_blocks, block_mask.kv_indices, block_mask.full_kv_num_blocks,
                     block_mask.full_kv_indices)


def to_block_mask(mask: Any, block: int, q_len: Optional[int] = None, kv_len: Optional[int] = None,
                  device: Any = "cpu") -> Any:
    """A boolean mask to a torch flex_attention BlockMask of BLOCK_SIZE block: every kept block a
    partial one whose mask_mod keeps all its tokens (as baatt does) and drops the others' (what
    flex_attention's unfused eager path applies). q_len / kv_len: the sequence lengths (default:
    whole blocks). Size-1 batch or head dimensions of the mask serve every batch or head."""
    import torch
    from torch.nn.attention.flex_attention import BlockMask
    m = _bool_mask(mask)
    num, idx = to_flex(m)
    table = torch.from_numpy(m).to(device)
    nb, nh = m.shape[:2]

    def mask_mod(b, h, q_idx, kv_idx):
        return table[b % nb, h % nh, q_idx // block, kv_idx // block]

    lengths = None
    if q_len is not None or kv_len is not None:
        lengths = (q_len or num.shape[2] * block, kv_len or idx.shape[3] * block)
    return BlockMask.from_kv_blocks(torch.from_numpy(num).to(device), torch.from_numpy(idx).to(device),
                                    BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=lengths)
