"""Precision variants of the written float32 graphs (catalog.py lists them): int8 (block-wise weight-only),
int8-dynamic (dynamic quantization) and fp16 (mixed precision).

convert writes them; validate re-creates fp16's float16 rounding in float32 to measure on a CPU what CUDA computes.
"""
