"""Precision variants of the written float32 graphs: int8 (dynamic quantization) and fp16 (mixed precision).

convert writes them; validate re-creates fp16's float16 rounding in float32 to measure on a CPU what CUDA computes.
"""
