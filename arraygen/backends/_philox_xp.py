"""Philox4x32-10 uniforms at arbitrary stream elements, on arrays of any namespace.

For launchers that need the uniforms of a window of a larger array (the ``origin`` of the
Gibbs launcher contract, :func:`arraygen._kernels.gibbs.row_starts`): element ``e`` (an int64
array) reads word ``e mod 4`` of block ``floor(e / 4) mod 2**64`` of the stream with counter
words ``(c2, c3)`` and key ``(k0, k1)``, the layout of :mod:`arraygen.random`. Only int64
arithmetic is used (torch has no uint64 arithmetic); products are split into 16-bit halves so
nothing overflows. ``xp`` is an Array API namespace (``array_api_compat`` wraps torch and CuPy).
:func:`philox_words` is also the round function of :mod:`arraygen.random` (one source).
"""

from __future__ import annotations

M0 = 0xD2511F53
M1 = 0xCD9E8D57
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10


def mulhilo(a, multiplier: int):
    """(hi, lo) 32-bit halves of ``a * multiplier`` for uint32 values held in a wider dtype.

    uint64 arrays multiply directly (the product of two 32-bit values fits); int64 arrays
    (torch has no uint64 arithmetic) split ``a`` into 16-bit halves so nothing overflows.
    """
    if "uint64" in str(a.dtype):
        p = a * multiplier
        return p >> 32, p & MASK32
    a_lo = a & 0xFFFF
    a_hi = a >> 16
    p_lo = a_lo * multiplier
    p_hi = a_hi * multiplier
    mid = p_lo + ((p_hi & 0xFFFF) << 16)
    return (p_hi >> 16) + (mid >> 32), mid & MASK32


def philox_words(c0, c1, c2, c3, k0, k1, rounds: int = ROUNDS):
    """Philox4x32 rounds on uint64 or int64 arrays holding uint32 values (the four counter
    words, broadcastable); the keys ``k0, k1`` may be ints or arrays. Returns the 4 words."""
    for i in range(rounds):
        if i:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        hi0, lo0 = mulhilo(c0, M0)
        hi1, lo1 = mulhilo(c2, M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def words_at(xp, elements, c2: int, c3: int, k0: int, k1: int):
    """uint32 words (held in int64) of the stream at the int64 ``elements`` (any shape)."""
    block = elements >> 2  # floor(e / 4); the two's complement bits are the block mod 2**64
    zero = xp.zeros_like(block)
    w0, w1, w2, w3 = philox_words(block & MASK32, (block >> 32) & MASK32, zero + int(c2),
                                  zero + int(c3), int(k0), int(k1))
    lane = elements & 3
    return xp.where(lane == 0, w0, xp.where(lane == 1, w1, xp.where(lane == 2, w2, w3)))


def uniform_f32_at(xp, elements, c2: int, c3: int, k0: int, k1: int):
    """float32 uniforms ``((w >> 9) + 0.5) 2**-23`` of the stream at ``elements``."""
    w = words_at(xp, elements, c2, c3, k0, k1)
    return (xp.astype(w >> 9, xp.float32) + 0.5) * (2.0**-23)


def window_sweeps(launcher, spins, couplings, bias, colors, *, n_sweeps, key, origin, **kw):
    """Gibbs sweeps of a window of a larger array (launcher contract ``origin``) through a
    launcher's injected-uniform path: one launch per sweep with the uniforms of the window's
    stream elements, drawn on the spins' device. For launchers without an in-kernel origin."""
    import array_api_compat

    from .._kernels.gibbs import element_indices

    xp = array_api_compat.array_namespace(spins)
    e = xp.asarray(element_indices(tuple(spins.shape), origin),
                   device=array_api_compat.device(spins))
    dtype = couplings.dtype
    s = spins
    for t in range(n_sweeps):
        k = key.advance(t)
        u = xp.astype(uniform_f32_at(xp, e, *k.counter_words, *k.key_words), dtype)
        s = launcher(s, couplings, bias, colors, n_sweeps=1, uniforms=xp.reshape(
            u, (1,) + tuple(spins.shape)), key=None, **kw)
    return s


def origin_by_window(launcher):
    """Give a Gibbs launcher without an in-kernel origin the launcher contract's ``origin``.

    The wrapped launcher takes ``origin=None``; a call with an ``origin`` and no injected
    ``uniforms`` runs :func:`window_sweeps` over ``launcher`` (one launch per sweep with the
    window's Philox uniforms), any other call goes to ``launcher`` unchanged.
    """
    import functools

    @functools.wraps(launcher)
    def gibbs_sweeps(spins, couplings, bias, colors, *, n_sweeps, uniforms, key, origin=None,
                     **kw):
        if origin is not None and uniforms is None:
            return window_sweeps(launcher, spins, couplings, bias, colors, n_sweeps=n_sweeps,
                                 key=key, origin=origin, **kw)
        return launcher(spins, couplings, bias, colors, n_sweeps=n_sweeps, uniforms=uniforms,
                        key=key, **kw)

    return gibbs_sweeps
