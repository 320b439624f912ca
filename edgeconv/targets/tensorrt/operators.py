"""TensorRT's supported ONNX operators, embedded as data (no network access, no TensorRT needed to read it).

Source: onnx/onnx-tensorrt, ``docs/operators.md``, the matrix for **TensorRT 10.15** ("supports operators in the
inclusive range of opset 9 to opset 24"), Apache-2.0.  Each row is ``Operator | Y/N | types | restrictions``, kept as
the document states them (restrictions abridged).  TensorRT 11 parses with the same ONNX parser lineage; an operator
missing here is reported as "unknown", not as unsupported.
"""

from __future__ import annotations

SOURCE = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"
TRT_VERSION = "10.15"
OPSET_RANGE = (9, 24)
QUANTIZED_TYPES_NOTE = ("INT8, INT4, FP8 and FP4 are quantized types in TensorRT: available only through "
                        "quantization (Q/DQ) from a higher-precision floating-point type")

_F = "FP32, FP16, BF16"
_FI = "FP32, FP16, BF16, INT32, INT64"
_FIB = "FP32, FP16, BF16, INT32, INT64, BOOL"
_AXES = "`axes` must be an initializer"

_TABLE = f"""
Abs|Y|{_FI}|
Acos|Y|{_F}|
Acosh|Y|{_F}|
Add|Y|{_FI}|
AffineGrid|N||
And|Y|BOOL|
ArgMax|Y|{_FI}|
ArgMin|Y|{_FI}|
Asin|Y|{_F}|
Asinh|Y|{_F}|
Atan|Y|{_F}|
Atanh|Y|{_F}|
Attention|Y|FP32, FP16, BF16, INT8, FP8|Q, K, V, attn_mask 4D; past_key/past_value/nonpad_kv_seqlen unsupported
AveragePool|Y|{_F}|2D or 3D pooling only; `dilations` must be empty or all ones
BatchNormalization|Y|{_F}|
Bernoulli|N||
BitShift|N||
BitwiseAnd|N||
BitwiseNot|N||
BitwiseOr|N||
BitwiseXor|N||
BlackmanWindow|Y|FP32, FP16|
Cast|Y|FP32, FP16, BF16, INT32, INT64, UINT8, BOOL|
CastLike|Y|FP32, FP16, BF16, INT32, INT64, UINT8, BOOL|
Ceil|Y|{_F}|
Col2Im|N||
Celu|Y|{_F}|
CenterCropPad|N||
Clip|Y|{_F}|
Compress|N||
Concat|Y|{_FIB}|
ConcatFromSequence|N||
Constant|Y|FP32, FP16, BF16, FP8, FP4, INT4, INT32, INT64, BOOL|`sparse_value`, `value_string(s)` unsupported
ConstantOfShape|Y|FP32, FP16, BF16, FP8, FP4, INT4, INT32, INT64, BOOL|
Conv|Y|{_F}|
ConvInteger|N||
ConvTranspose|Y|{_F}|
Cos|Y|{_F}|
Cosh|Y|{_F}|
CumSum|Y|{_F}|`axis` must be a build-time constant
DFT|N||
DeformConv|Y|FP32, FP16|1D or 2D spatial input; symmetric pads
DepthToSpace|Y|{_FI}|
DequantizeLinear|Y|INT8, FP8, FP4, INT4|`x_zero_point` must be zero
Det|N||
Div|Y|{_FI}|
Dropout|Y|{_F}|`is_training` must be an initializer evaluating to False
DynamicQuantizeLinear|N||
Einsum|Y|{_F}|
Elu|Y|{_F}|
Equal|Y|{_FI}|
Erf|Y|{_F}|
Exp|Y|{_F}|
Expand|Y|{_FIB}|
EyeLike|Y|{_FIB}|`input` must have static dimensions
Flatten|Y|{_FIB}|
Floor|Y|{_F}|
Gather|Y|{_FIB}|
GatherElements|Y|{_FIB}|
GatherND|Y|{_FIB}|
Gelu|Y|FP32, FP16, BF16, INT8, INT32, INT64|
Gemm|Y|{_F}|
GlobalAveragePool|Y|{_F}|
GlobalLpPool|Y|{_F}|
GlobalMaxPool|Y|{_F}|
Greater|Y|{_FI}|
GreaterOrEqual|Y|{_FI}|
GridSample|Y|FP32, FP16|4D input only
GroupNormalization|Y|{_F}|
GRU|Y|{_F}|bidirectional GRUs need the same activations both ways
HammingWindow|Y|FP32, FP16|
HannWindow|Y|FP32, FP16|
HardSigmoid|Y|{_F}|
HardSwish|Y|{_F}|
Hardmax|Y|{_F}|`axis` dimension must be a build-time constant
Identity|Y|{_FIB}|
If|Y|{_FIB}|branch outputs must have the same rank and different names
ImageScaler|Y|{_F}|
ImageDecoder|N||
InstanceNormalization|Y|{_F}|
IsInf|Y|{_F}|
IsNaN|Y|{_FI}|
LayerNormalization|Y|{_F}|only the first output `Y`
LeakyRelu|Y|{_F}|
Less|Y|{_FI}|
LessOrEqual|Y|{_FI}|
Log|Y|{_F}|
LogSoftmax|Y|{_F}|
Loop|Y|{_FIB}|scan output length cannot be dynamic
LRN|Y|{_F}|
LSTM|Y|{_F}|`input_forget` must be 0; `layout` must be 0
LpNormalization|Y|{_F}|
LpPool|Y|{_F}|`dilations` must be empty or all ones
MatMul|Y|{_F}|
MatMulInteger|N||
Max|Y|{_FI}|
MaxPool|Y|{_F}|2D or 3D pooling only; `Indices` output unsupported; `dilations` empty or all ones
MaxRoiPool|N||
MaxUnpool|N||
Mean|Y|FP32, FP16, BF16, FP8, INT32, INT64|
MeanVarianceNormalization|Y|{_F}|
MelWeightMatrix|N||
Min|Y|{_FI}|
Mish|Y|FP32, FP16|
Mod|Y|{_FI}|
Mul|Y|{_FI}|
Multinomial|N||
Neg|Y|{_FI}|
NegativeLogLikelihoodLoss|N||
NonMaxSuppression|Y|FP32, FP16|
NonZero|Y|FP32, FP16|
Not|Y|BOOL|
OneHot|Y|{_FIB}|`depth` must be a build-time constant
Optional|N||
OptionalGetElement|N||
OptionalHasElement|N||
Or|Y|BOOL|
Pad|Y|{_FI}|
ParametricSoftplus|Y|{_F}|
Pow|Y|{_FI}|
PRelu|Y|{_F}|
QLinearConv|N||
QLinearMatMul|N||
QuantizeLinear|Y|{_F}|`y_zero_point` must be 0
RandomNormal|Y|{_F}|`seed` is ignored
RandomNormalLike|Y|{_F}|`seed` is ignored
RandomUniform|Y|{_F}|`seed` is ignored
RandomUniformLike|Y|{_F}|`seed` is ignored
Range|Y|{_FI}|
Reciprocal|Y|{_F}|
ReduceL1|Y|{_FI}|{_AXES}
ReduceL2|Y|{_FI}|{_AXES}
ReduceLogSum|Y|{_FI}|{_AXES}
ReduceLogSumExp|Y|{_FI}|{_AXES}
ReduceMax|Y|{_FI}|{_AXES}
ReduceMean|Y|{_FI}|{_AXES}
ReduceMin|Y|{_FI}|{_AXES}
ReduceProd|Y|{_FI}|{_AXES}
ReduceSum|Y|{_FI}|{_AXES}
ReduceSumSquare|Y|{_FI}|{_AXES}
RegexFullMatch|N||
Relu|Y|{_FI}|
Reshape|Y|{_FIB}|
Resize|Y|{_F}|nearest|linear; half_pixel|pytorch_half_pixel|tf_half_pixel_for_nn|asymmetric|align_corners; no antialias
ReverseSequence|Y|{_FIB}|
RMSNormalization|Y|{_F}|
RNN|Y|{_F}|bidirectional RNNs need the same activations both ways
RoiAlign|Y|FP32, FP16|
RotaryEmbedding|Y|{_F}|`position_ids` must be INT64
Round|Y|{_F}|
STFT|Y|FP32|`frame_step` and `window` must be initializers; real input
ScaledTanh|Y|{_F}|
Scan|Y|{_F}|
Scatter|Y|{_FI}|
ScatterElements|Y|{_FI}|
ScatterND|Y|{_FI}|`reduction` other than none unsupported
Selu|Y|{_F}|
SequenceAt|N||
SequenceConstruct|N||
SequenceEmpty|N||
SequenceErase|N||
SequenceInsert|N||
SequenceLength|N||
SequenceMap|N||
Shape|Y|{_FIB}|
Shrink|Y|{_FI}|
Sigmoid|Y|{_F}|
Sign|Y|{_FI}|
Sin|Y|{_F}|
Sinh|Y|{_F}|
Size|Y|{_FIB}|
Slice|Y|{_FIB}|
Softmax|Y|{_F}|
SoftmaxCrossEntropyLoss|N||
Softplus|Y|{_F}|
Softsign|Y|{_F}|
SpaceToDepth|Y|{_FI}|
Split|Y|{_FIB}|
SplitToSequence|N||
Sqrt|Y|{_F}|
Squeeze|Y|{_FIB}|`axes` must be resolvable to a constant
StringConcat|N||
StringNormalizer|N||
StringSplit|N||
Sub|Y|{_FI}|
Sum|Y|{_FI}|
Tan|Y|{_F}|
Tanh|Y|{_F}|
TensorScatter|Y|FP32, FP16, BF16, INT32|`past_cache` and `update` 4D; `axis` -2
TfIdfVectorizer|N||
ThresholdedRelu|Y|{_F}|
Tile|Y|{_FIB}|
TopK|Y|{_FI}|`sorted` must be 1; K < 3840
Transpose|Y|{_FIB}|
Trilu|Y|{_FIB}|
Unique|N||
Unsqueeze|Y|{_FIB}|`axes` must be resolvable to a constant
Upsample|Y|{_F}|
Where|Y|{_FIB}|
Xor|Y|BOOL|
"""


def _parse() -> dict[str, tuple[bool, tuple[str, ...], str]]:
    table = {}
    for line in _TABLE.strip().splitlines():
        op, yes, types, restriction = line.split("|", 3)
        table[op] = (yes == "Y", tuple(t.strip() for t in types.split(",") if t.strip()), restriction.strip())
    return table


OPERATORS: dict[str, tuple[bool, tuple[str, ...], str]] = _parse()
