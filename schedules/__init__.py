"""TE compute definitions of tvmq's integer quantized ops: the single source of integer arithmetic.

The same TE/TIR builds for the host (LLVM) and for Cortex-M (plain C), so both agree bit for bit.
Arithmetic follows TensorFlow Lite Micro's int8 reference kernels (except ``qsoftmax``, an integer-only
LUT softmax). This package depends only on tvm and numpy (no ``tvmq.*`` imports): it installs as
``tvmq.schedules`` but must also import as a top-level ``schedules`` package.
"""

from .codebook import (
    ACT_PACK,
    LutEpilogue,
    binary_search,
    decode_activation,
    decode_weight,
    lut_code,
    lut_requantize,
    nl_quantize,
    pack_codes,
    pack_rows,
    packable,
    packed_row_bytes,
    packed_shape,
    slot_bits,
    unpack_codes,
    unpack_rows,
)
from .conv import conv_out_size, qconv2d
from .data_movement import qconcat, qpad, qtranspose
from .default import default_schedule, device_schedule
from .dense import qdense
from .elementwise import broadcast_shape, dequantize, qadd, qclamp, qlut, qrequantize, quantize
from .fixed_point import (
    multiply_by_quantized_multiplier,
    pow2_requantize,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from .inplace import inplace_shift
from .pool import pool_out_size, qavg_pool2d, qglobal_avg_pool2d, qmax_pool2d
from .primfuncs import (
    dequantize_primfunc,
    nl_quantize_primfunc,
    qadd_primfunc,
    qavg_pool2d_primfunc,
    qclamp_primfunc,
    qconcat_primfunc,
    qconv2d_primfunc,
    qdecode_primfunc,
    qdense_primfunc,
    qlut_primfunc,
    qmax_pool2d_primfunc,
    qmean_primfunc,
    qpad_primfunc,
    qrequantize_primfunc,
    qsoftmax_primfunc,
    qsoftmax_tflm_primfunc,
    qtranspose_primfunc,
    quantize_primfunc,
)
from .softmax import qsoftmax

__all__ = [
    "ACT_PACK",
    "LutEpilogue",
    "binary_search",
    "decode_activation",
    "decode_weight",
    "lut_code",
    "lut_requantize",
    "nl_quantize",
    "pack_codes",
    "packable",
    "packed_shape",
    "unpack_codes",
    "unpack_rows",
    "qdecode_primfunc",
    "nl_quantize_primfunc",
    "pack_rows",
    "packed_row_bytes",
    "slot_bits",
    "conv_out_size",
    "default_schedule",
    "device_schedule",
    "inplace_shift",
    "pool_out_size",
    "broadcast_shape",
    "multiply_by_quantized_multiplier",
    "pow2_requantize",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    "qconv2d",
    "qdense",
    "qadd",
    "qrequantize",
    "qclamp",
    "qlut",
    "quantize",
    "dequantize",
    "qmax_pool2d",
    "qavg_pool2d",
    "qglobal_avg_pool2d",
    "qsoftmax",
    "qpad",
    "qconcat",
    "qtranspose",
    "qtranspose_primfunc",
    "qconv2d_primfunc",
    "qdense_primfunc",
    "qadd_primfunc",
    "qrequantize_primfunc",
    "qclamp_primfunc",
    "qlut_primfunc",
    "qmean_primfunc",
    "qmax_pool2d_primfunc",
    "qavg_pool2d_primfunc",
    "qsoftmax_primfunc",
    "qsoftmax_tflm_primfunc",
    "qpad_primfunc",
    "qconcat_primfunc",
    "quantize_primfunc",
    "dequantize_primfunc",
]
