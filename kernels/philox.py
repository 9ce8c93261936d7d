"""Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
the counter-based generator of Random123, cuRAND and JAX.

A Philox call maps a 128-bit counter and a 64-bit key to 128 random bits, with no state:
varstore keys it with the seed and counts with the element's index, so element ``i`` of a
variable is a pure function of (seed, i), whatever the backend, launch geometry or chunking.
"""

from __future__ import annotations

from numba import uint32, uint64

from ._targets import element
from .intrinsics import mulwide32

U32 = uint32
U64 = uint64

PHILOX_M0 = 0xD2511F53  # round multipliers
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # key schedule (Weyl) increments
PHILOX_W1 = 0xBB67AE85


@element
def mulhilo32(a, b):
    """(high, low) 32-bit halves of the 64-bit product of two uint32 (one mul.wide.u32)."""
    product = mulwide32(a, b)
    return U32(product >> U64(32)), U32(product)


@element
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """The four uint32 outputs of Philox4x32 with 10 rounds for counter (c0..c3), key (k0, k1)."""
    c0 = U32(c0)
    c1 = U32(c1)
    c2 = U32(c2)
    c3 = U32(c3)
    k0 = U32(k0)
    k1 = U32(k1)
    for _ in range(10):
        hi0, lo0 = mulhilo32(U32(PHILOX_M0), c0)
        hi1, lo1 = mulhilo32(U32(PHILOX_M1), c2)
        c0, c1, c2, c3 = U32(U32(hi1 ^ c1) ^ k0), lo1, U32(U32(hi0 ^ c3) ^ k1), lo0
        k0 = U32(k0 + U32(PHILOX_W0))
        k1 = U32(k1 + U32(PHILOX_W1))
    return c0, c1, c2, c3


def seed_to_key(seed: int) -> tuple[int, int]:
    """The Philox key (k0, k1) of a seed: its 64-bit two's-complement low and high words."""
    word = int(seed) & 0xFFFFFFFFFFFFFFFF
    return word & 0xFFFFFFFF, word >> 32
