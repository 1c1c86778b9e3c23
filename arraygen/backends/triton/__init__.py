"""Triton kernels (``@triton.jit``) and launchers, one module per hot path.

Launchers work on torch tensors (CuPy arrays are handed over through DLPack without a copy; under
``TRITON_INTERPRET=1`` NumPy arrays become CPU tensors). ``philox`` holds the Philox4x32-10 stream
as Triton device functions (not ``tl.rand``, whose stream layout differs from arraygen's).
"""


def _fix_interpreter_index() -> None:
    """Triton's interpreter turns scalar arguments into 1-element arrays and converts them with
    ``int(array)``, which NumPy >= 2.4 rejects; loop bounds like ``range(0, m, BLOCK)`` then
    fail. Wrap its tensor patch so ``__index__`` reads the single element."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_arraygen_fixed", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._arraygen_fixed = True
    interpreter._patch_lang_tensor = patched


def _apply_interpreter_fixes() -> None:
    from .. import is_simulated

    if is_simulated("triton"):
        _fix_interpreter_index()


_apply_interpreter_fixes()
