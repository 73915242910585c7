"""Benchmarks (not tests): python -m sakura_uring.bench chains [--quick]"""
