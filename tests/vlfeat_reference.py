"""VLFeat's own C library (Debian's libvlfeat-dev, VLFeat 0.9.21) through ctypes: the reference
the shallow representations are checked against. Tests skip, with the reason, without it."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

LIBRARY = ctypes.util.find_library("vl")
#: skip marker for tests that need the library
needs_vlfeat = pytest.mark.skipif(
    LIBRARY is None,
    reason="VLFeat's C library is not installed (apt-get install libvlfeat-dev; .ci/run does)",
)

_UOCTTI = 1  # VlHogVariantUoctti
_LBP_UNIFORM = 0  # VlLbpUniform


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBRARY)
    lib.vl_hog_new.restype = ctypes.c_void_p
    lib.vl_hog_new.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    lib.vl_hog_put_image.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    for name in ("vl_hog_get_width", "vl_hog_get_height", "vl_hog_get_dimension"):
        getattr(lib, name).restype = ctypes.c_size_t
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.vl_hog_extract.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)]
    lib.vl_hog_set_use_bilinear_orientation_assignments.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.vl_hog_delete.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_new.restype = ctypes.c_void_p
    lib.vl_lbp_new.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.vl_lbp_get_dimension.restype = ctypes.c_size_t
    lib.vl_lbp_get_dimension.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_process.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    lib.vl_lbp_delete.argtypes = [ctypes.c_void_p]
    return lib


def _pointer(array: np.ndarray) -> ctypes._Pointer:
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def vlfeat_hog(
    image: np.ndarray, cell_size: int = 8, num_orientations: int = 9, bilinear: bool = False
) -> np.ndarray:
    """``vl_hog`` (UoCTTI) of an ``(H, W)`` or ``(H, W, C)`` float image: ``(31, hogH, hogW)``."""
    lib = _library()
    planes = image[..., None] if image.ndim == 2 else image
    height, width, channels = planes.shape
    # VLFeat's C layout (not transposed): x fastest, then y, then the channel
    data = np.ascontiguousarray(planes.transpose(2, 0, 1), dtype=np.float32)
    hog = lib.vl_hog_new(_UOCTTI, num_orientations, 0)
    try:
        lib.vl_hog_set_use_bilinear_orientation_assignments(hog, int(bilinear))
        lib.vl_hog_put_image(hog, _pointer(data), width, height, channels, cell_size)
        shape = (
            lib.vl_hog_get_dimension(hog),
            lib.vl_hog_get_height(hog),
            lib.vl_hog_get_width(hog),
        )
        out = np.zeros(shape, dtype=np.float32)
        lib.vl_hog_extract(hog, _pointer(out))
    finally:
        lib.vl_hog_delete(hog)
    return out


def vlfeat_lbp(grey: np.ndarray, cell_size: int = 16) -> np.ndarray:
    """``vl_lbp`` (uniform, 58 classes) of an ``(H, W)`` float image: ``(58, H/cs, W/cs)``."""
    lib = _library()
    height, width = grey.shape
    data = np.ascontiguousarray(grey, dtype=np.float32)
    lbp = lib.vl_lbp_new(_LBP_UNIFORM, 0)
    try:
        dimension = lib.vl_lbp_get_dimension(lbp)
        out = np.zeros((dimension, height // cell_size, width // cell_size), dtype=np.float32)
        lib.vl_lbp_process(lbp, _pointer(out), _pointer(data), width, height, cell_size)
    finally:
        lib.vl_lbp_delete(lbp)
    return out


class _DsiftGeometry(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_int) for name in ("numBinT", "numBinX", "numBinY", "binSizeX", "binSizeY")
    ]


class _DsiftFilter(ctypes.Structure):
    """``VlDsiftFilter`` of vl/dsift.h (0.9.21): its accessors are inline, not exported."""

    _fields_ = [
        *[(name, ctypes.c_int) for name in ("imWidth", "imHeight", "stepX", "stepY")],
        *[(name, ctypes.c_int) for name in ("boundMinX", "boundMinY", "boundMaxX", "boundMaxY")],
        ("geom", _DsiftGeometry),
        ("useFlatWindow", ctypes.c_int),
        ("windowSize", ctypes.c_double),
        ("numFrames", ctypes.c_int),
        ("descrSize", ctypes.c_int),
        ("frames", ctypes.c_void_p),
        ("descrs", ctypes.POINTER(ctypes.c_float)),
        ("numBinAlloc", ctypes.c_int),
        ("numFrameAlloc", ctypes.c_int),
        ("numGradAlloc", ctypes.c_int),
        ("grads", ctypes.c_void_p),
        ("convTmp1", ctypes.c_void_p),
        ("convTmp2", ctypes.c_void_p),
    ]


def vlfeat_dsift(
    grey: np.ndarray, bin_size: int = 8, step: int = 8, fast: bool = True
) -> np.ndarray:
    """``vl_dsift`` of an ``(H, W)`` float image: ``(frames along y, along x, 128)``
    descriptors in VLFeat's order (orientation fastest, then x bin, then y bin)."""
    lib = ctypes.CDLL(LIBRARY)
    lib.vl_dsift_new_basic.restype = ctypes.POINTER(_DsiftFilter)
    lib.vl_dsift_new_basic.argtypes = [ctypes.c_int] * 4
    lib.vl_dsift_process.argtypes = [ctypes.POINTER(_DsiftFilter), ctypes.POINTER(ctypes.c_float)]
    lib.vl_dsift_delete.argtypes = [ctypes.POINTER(_DsiftFilter)]
    height, width = grey.shape
    data = np.ascontiguousarray(grey, dtype=np.float32)
    dsift = lib.vl_dsift_new_basic(width, height, step, bin_size)
    try:
        dsift.contents.useFlatWindow = int(fast)
        lib.vl_dsift_process(dsift, _pointer(data))
        state = dsift.contents
        frame = state.geom.binSizeX * (state.geom.numBinX - 1) + 1
        frames_x = (width - 1 - (frame - 1)) // step + 1
        frames_y = (height - 1 - (frame - 1)) // step + 1
        assert frames_x * frames_y == state.numFrames
        flat = np.ctypeslib.as_array(state.descrs, shape=(state.numFrames * state.descrSize,))
        out = flat.reshape(frames_y, frames_x, state.descrSize).copy()
    finally:
        lib.vl_dsift_delete(dsift)
    return out
