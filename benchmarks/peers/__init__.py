"""Peer Kalman filter implementations used by ``benchmarks/kalman_speed.py``.

Each module wraps one implementation behind ``filter_*(observations, model)`` style functions
that take numpy arrays and return filtered means (and, where the library provides it, the
total log-likelihood), so the benchmark can check they agree with ldmfilter before timing them.
"""
